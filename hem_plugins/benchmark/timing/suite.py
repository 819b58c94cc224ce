"""``--suite small``: MLP training steps at batch 32, then loss-only calls at many shapes."""

from __future__ import annotations

import copy
import warnings

import torch

from hem_plugins import HEMLoss, HEMPlusLoss, margin_for_dataset

from .cases import dtype_name, loss_fns, make_inputs, parse_shape, shape_name
from .timing import fastest, interleaved, saved_bytes, synchronizer

STEPS_PER_SAMPLE = 20


def _mlp(device) -> torch.nn.Module:
    return torch.nn.Sequential(
        torch.nn.Linear(64, 256),
        torch.nn.ReLU(),
        torch.nn.Linear(256, 256),
        torch.nn.ReLU(),
        torch.nn.Linear(256, 10),
    ).to(device)


def mlp_step_suite(device, budget_s: float, compiled: bool = False) -> list[dict]:
    """Training step of an MLP 64-256-256-10 (SGD with momentum) at batch 32, CE vs the modules.

    ``compiled``: the forward (model and loss) through ``torch.compile`` (Inductor, the
    default backend; the loss as its registered operator), compiled before timing; the
    backward is the compiled graph's, the optimizer step eager, for CE as for the losses.
    """
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(32, 64, generator=gen).to(device)
    t = torch.randint(0, 10, (32,), generator=gen).to(device)
    torch.manual_seed(0)
    base = _mlp(device)
    initial = copy.deepcopy(base.state_dict())
    criteria = {
        "CE": torch.nn.CrossEntropyLoss(),
        "HEMLoss(margin)": HEMLoss(margin=margin_for_dataset(50_000)),
        "HEMPlusLoss(class_counts)": HEMPlusLoss(class_counts=[5000 + 100 * i for i in range(10)]),
        "HEMPlusLoss() online": HEMPlusLoss(num_samples=50_000),
    }

    def make_step(crit):
        model = copy.deepcopy(base)
        crit = crit.to(device)
        opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)

        def reset():  # untimed: every sample trains from the same weights (no divergence)
            model.load_state_dict(initial)
            opt.state.clear()

        def forward(x, t):
            return crit(model(x), t)

        if compiled:
            forward = torch.compile(forward)
            reset()
            for _ in range(3):  # compiled here, untimed (and the online counts' first step)
                forward(x, t).backward()

        def run():
            for _ in range(STEPS_PER_SAMPLE):
                opt.zero_grad()
                forward(x, t).backward()
                opt.step()

        return reset, run

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the online form warns once
        steps = {name: make_step(crit) for name, crit in criteria.items()}
        fns = {name: run for name, (_, run) in steps.items()}
        resets = {name: reset for name, (reset, _) in steps.items()}
        samples = interleaved(fns, budget_s, 10, 2000, synchronizer(device), resets)
    best = fastest(samples)
    label = "compiled step" if compiled else "step"
    return [
        {
            "case": f"MLP 64-256-256-10 {label}, batch 32, {name}",
            "criterion": name,
            "ce_us": 1e6 * best["CE"] / STEPS_PER_SAMPLE,
            "hem_us": 1e6 * best[name] / STEPS_PER_SAMPLE,
            "ratio": best[name] / best["CE"],
            "samples": len(samples[name]),
        }
        for name in criteria
        if name != "CE"
    ]


def loss_suite(shape, device, dtype, budget_s: float) -> dict:
    """Forward+backward of CE, ``hem_loss`` and ``HEMLoss`` on the same logits, interleaved."""
    logits, target = make_inputs(shape, device, dtype)
    fns = loss_fns(shape, device)
    reps = max(1, min(200, 2_000_000 // logits.numel()))  # calls per sample: ~1 ms at least

    def call(fn):
        def run():
            for _ in range(reps):
                fn(logits, target).backward()
                logits.grad = None

        return run

    forms = {"CE": fns["ce"], "hem_loss": fns["hem_loss"], "HEMLoss": fns["hem"]}
    calls = {k: call(f) for k, f in forms.items()}
    samples = interleaved(calls, budget_s, 5, 5000, synchronizer(device))
    best = fastest(samples)
    ce_saved = saved_bytes(fns["ce"], logits, target)
    hem_saved = saved_bytes(fns["hem"], logits, target)
    return {
        "case": f"{shape_name(shape)} {dtype_name(dtype)}",
        "shape": shape_name(shape),
        "dtype": dtype_name(dtype),
        "ce_ms": 1e3 * best["CE"] / reps,
        "hem_loss_ms": 1e3 * best["hem_loss"] / reps,
        "HEMLoss_ms": 1e3 * best["HEMLoss"] / reps,
        "ratio_functional": best["hem_loss"] / best["CE"],
        "ratio": best["HEMLoss"] / best["CE"],
        "saved_ratio": hem_saved / ce_saved,
        "samples": len(samples["CE"]),
    }


def small_suite(device, budget_s: float, shapes, bf16_shapes) -> dict:
    """MLP steps (3x the budget), then loss-only calls at ``shapes`` (float32), ``bf16_shapes``."""
    steps = mlp_step_suite(device, 3 * budget_s)
    compiled = mlp_step_suite(device, 3 * budget_s, compiled=True)
    cases = [(sh, torch.float32) for sh in shapes] + [(sh, torch.bfloat16) for sh in bf16_shapes]
    losses = [loss_suite(parse_shape(sh), device, dtype, budget_s) for sh, dtype in cases]
    return {"mlp_step": steps, "mlp_step_compiled": compiled, "loss": losses}
