"""``torch.compile`` of training steps with the losses: one graph, the eager values.

Every loss and option a user compiles (``HEMLoss``, ``HEMPlusLoss`` with fixed counts,
online counts, each margin rule, each divisor, ``hem_loss``, ``mm_loss``) traces with
``fullgraph=True`` (an error on any graph break) into a step whose loss and gradients
equal the eager step's; ``torch.library.opcheck`` passes on the registered operator.
"""

from __future__ import annotations

import warnings

import pytest
import torch

from hem_plugins import HEMLoss, HEMPlusLoss, hem_loss, mm_loss
from hem_plugins.adaptive_margins import ErrorDrivenMargins, ScheduledMargins
from hem_plugins.implementations import registered_op
from hem_plugins.implementations.options import LossOptions

pytestmark = pytest.mark.skipif(
    not registered_op.AVAILABLE, reason="torch.library.custom_op needs torch 2.4"
)


def _losses():
    counts = [float(c) for c in range(3, 13)]
    return {
        "hem_loss": lambda: (lambda x, t: hem_loss(x, t, 0.7)),
        "hem_loss_per_class": lambda: (lambda x, t: hem_loss(x, t, torch.linspace(0.2, 1.0, 10))),
        "mm_loss": lambda: (lambda x, t: mm_loss(x, t, 1.0)),
        "HEMLoss": lambda: HEMLoss(margin=0.8),
        "HEMLoss_rows": lambda: HEMLoss(margin=0.8, divisor="rows"),
        "HEMLoss_floor": lambda: HEMLoss(margin=0.8, divisor=("floor", 0.3)),
        "HEMPlusLoss_counts": lambda: HEMPlusLoss(class_counts=counts),
        "HEMPlusLoss_online": lambda: HEMPlusLoss(),
        "HEMPlusLoss_error": lambda: HEMPlusLoss(
            class_counts=counts, margin_rule=ErrorDrivenMargins()
        ),
        "HEMPlusLoss_scheduled": lambda: HEMPlusLoss(
            class_counts=counts, margin_rule=ScheduledMargins(warmup_steps=3)
        ),
        "HEMPlusLoss_online_error": lambda: HEMPlusLoss(margin_rule=ErrorDrivenMargins()),
    }


LOSSES = _losses()


def _step(model, criterion, opt, compiled: bool):
    """A training step whose forward (model and loss) is compiled whole; AOT autograd
    compiles its backward."""

    def forward(x, t):
        return criterion(model(x), t)

    if compiled:
        torch._dynamo.reset()
        forward = torch.compile(forward, fullgraph=True, backend="aot_eager")

    def step(x, t):
        opt.zero_grad(set_to_none=True)
        loss = forward(x, t)
        loss.backward()
        opt.step()
        return loss.detach()

    return step


def _train(name, compiled: bool, steps: int = 4):
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(16, 32), torch.nn.ReLU(), torch.nn.Linear(32, 10))
    criterion = LOSSES[name]()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    step = _step(model, criterion, opt, compiled)
    g = torch.Generator().manual_seed(1)
    losses = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the losses' one-time notes (fallback margin, online)
        for _ in range(steps):
            x = torch.randn(24, 16, generator=g)
            t = torch.randint(0, 10, (24,), generator=g)
            losses.append(step(x, t))
    return torch.stack(losses), [p.detach().clone() for p in model.parameters()], criterion


@pytest.mark.parametrize("name", sorted(LOSSES))
def test_compiled_step_is_one_graph_with_the_eager_values(name, one_thread):
    eager_losses, eager_params, eager_crit = _train(name, compiled=False)
    compiled_losses, compiled_params, compiled_crit = _train(name, compiled=True)
    torch.testing.assert_close(compiled_losses, eager_losses)
    for a, b in zip(compiled_params, eager_params, strict=True):
        torch.testing.assert_close(a, b)
    if isinstance(eager_crit, torch.nn.Module):  # the loss's state follows the same steps
        for (k, a), (_, b) in zip(
            compiled_crit.state_dict().items(), eager_crit.state_dict().items(), strict=True
        ):
            torch.testing.assert_close(a, b, msg=f"state {k!r} differs")


@pytest.mark.parametrize("name", ["HEMPlusLoss_online", "HEMPlusLoss_scheduled", "HEMLoss"])
def test_later_steps_reuse_the_compiled_graph(name, one_thread):
    """State that changes every step (online counts, a schedule's step) lives in buffers, so
    the step compiles once (twice where the first step sizes the per-class buffers)."""
    from torch._dynamo.utils import counters

    counters.clear()
    _train(name, compiled=True, steps=6)
    assert counters["stats"]["unique_graphs"] <= 2


def _op_args(reduction="mean", with_grad=True, table=False, weight=False, avg=None):
    g = torch.Generator().manual_seed(3)
    x = torch.randn(6, 4, 3, generator=g, requires_grad=True)
    t = torch.randint(0, 4, (6, 3), generator=g)
    t[0, 0] = -100
    margin = torch.tensor([0.5, 1.0, 1.5, 0.7]) if table else None
    w = torch.rand(6, 3, generator=g) if weight else None
    return (x, t, margin, 0.8, w, None, avg, None, -100, reduction, 1, None, True, "kept",
            0.0, True, with_grad)  # fmt: skip


@pytest.mark.parametrize(
    "kwargs",
    [
        {},
        {"reduction": "none"},
        {"reduction": "sum", "table": True},
        {"weight": True, "avg": torch.tensor(5.0)},
        {"with_grad": False},
    ],
    ids=["mean", "none", "sum_per_class", "weight_avg_factor", "no_grad"],
)
def test_opcheck(kwargs):
    torch.library.opcheck(torch.ops.hem_plugins.margin_loss.default, _op_args(**kwargs))


def test_the_operator_gives_the_eager_loss_and_gradient():
    args = _op_args(reduction="none", table=True, weight=True)
    x = args[0]
    loss, _ = torch.ops.hem_plugins.margin_loss(*args)
    go = torch.rand(loss.shape)
    (grad,) = torch.autograd.grad(loss, x, go)
    xe = x.detach().requires_grad_(True)
    want = hem_loss(xe, args[1], args[2], reduction="none", weight=args[4])
    (want_grad,) = torch.autograd.grad(want, xe, go)
    torch.testing.assert_close(loss, want.detach())
    torch.testing.assert_close(grad, want_grad)


def test_bad_input_names_itself_in_the_compiled_step():
    """Values are checked inside the operator (a ValueError when the step runs); shapes when
    the step is traced (a ValueError; with ``fullgraph`` Dynamo's error quotes it)."""
    torch._dynamo.reset()
    x = torch.randn(4, 3, requires_grad=True)
    f = torch.compile(lambda x, t: hem_loss(x, t, 1.0), backend="aot_eager")
    with pytest.raises(ValueError, match=r"indices \[7\] outside"):
        f(x, torch.tensor([0, 1, 2, 7]))
    with pytest.raises(ValueError, match="target shape"):
        f(x, torch.tensor([0, 1, 2]))
    torch._dynamo.reset()
    g = torch.compile(lambda x, t: hem_loss(x, t, 1.0), fullgraph=True, backend="aot_eager")
    with pytest.raises(Exception, match="target shape"):
        g(x, torch.tensor([0, 1, 2]))


def test_a_warning_under_compile_is_said_at_the_next_call():
    crit = HEMLoss()  # no margin: the one-time fallback note
    f = torch.compile(lambda x, t: crit(x, t), fullgraph=True, backend="aot_eager")
    torch._dynamo.reset()
    x, t = torch.randn(4, 3), torch.tensor([0, 1, 2, 0])
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        f(x, t)
        f(x, t)
    assert sum("fallback margin" in str(w.message) for w in seen) == 1


@pytest.mark.slow
def test_inductor_compiles_the_step(one_thread):
    """The default backend (Inductor generates C++ for the CPU) with the operator in the graph."""
    x = torch.randn(16, 10, requires_grad=True)
    t = torch.randint(0, 10, (16,))
    crit = HEMPlusLoss(class_counts=[float(c) for c in range(1, 11)])
    torch._dynamo.reset()
    loss = torch.compile(lambda x, t: crit(x * 2.0, t), fullgraph=True)(x, t)
    loss.backward()
    xe = x.detach().requires_grad_(True)
    want = crit(xe * 2.0, t)
    want.backward()
    torch.testing.assert_close(loss, want)
    torch.testing.assert_close(x.grad, xe.grad)


def test_the_flattened_arguments_follow_the_operator_schema():
    schema = torch.ops.hem_plugins.margin_loss.default._schema
    assert tuple(a.name for a in schema.arguments) == registered_op.ARGS
    margin = torch.linspace(0.2, 1.0, 10)
    opts = LossOptions(-1, "sum", 1, None, None, torch.tensor(3.0), None, False, ("floor", 0.1))
    back_margin, back_opts = registered_op._unflatten(registered_op._flatten(margin, opts))
    assert back_margin is margin and back_opts == opts
    back_margin, back_opts = registered_op._unflatten(
        registered_op._flatten(0.5, opts._replace(avg_factor=2.0))
    )
    assert back_margin == 0.5 and back_opts.avg_factor == 2.0
