"""Adaptive margins of HEM+ (hem_plugins.adaptive_margins; docs/adaptive_margins.md)."""

from __future__ import annotations

import math
import os
import warnings

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from hem_plugins import HEMPlusLoss, hem_loss
from hem_plugins.adaptive_margins import (
    ErrorDrivenMargins,
    ScheduledMargins,
    build_margin_rule,
)


def logits_for(pred: list[int], c: int) -> torch.Tensor:
    """Logits whose arg-max is ``pred`` (one row per entry)."""
    x = torch.zeros(len(pred), c)
    x[torch.arange(len(pred)), torch.tensor(pred)] = 1.0
    return x


# -- default: no rule, HEM+ itself ----------------------------------------------------


def test_default_is_hem_plus_bit_for_bit():
    gen = torch.Generator().manual_seed(0)
    x, t = torch.randn(64, 5, generator=gen), torch.randint(0, 5, (64,), generator=gen)
    plain = HEMPlusLoss(class_counts=[50, 20, 10, 5, 2])
    explicit = HEMPlusLoss(class_counts=[50, 20, 10, 5, 2], margin_rule=None)
    ref = hem_loss(x, t, plain.margin)
    assert torch.equal(plain(x, t), ref) and torch.equal(explicit(x, t), ref)
    assert set(explicit.state_dict()) == set(plain.state_dict())
    assert not any(k.startswith("margin_rule") for k in plain.state_dict())
    assert plain.margin_rule is None


# -- error-driven rule ----------------------------------------------------------------


def test_error_rule_update_by_hand():
    rule = ErrorDrivenMargins(momentum=0.5, power=1.0, eps=0.1, min_factor=0.5, max_factor=2.0)
    # class 0: 4 rows, 1 wrong; class 1: 2 rows, 2 wrong; class 2: absent; one ignored row
    t = torch.tensor([0, 0, 0, 0, 1, 1, 255])
    pred = [0, 0, 0, 2, 0, 2, 1]
    rule.observe(logits_for(pred, 3), t, ignore_index=255)
    # e = 0.5 * (0.25, 1.0, absent -> 0)
    torch.testing.assert_close(rule.error, torch.tensor([0.125, 0.5, 0.0]))
    mean = (0.125 + 0.5 + 0.0) / 3
    expected = [(0.125 + 0.1) / (mean + 0.1), (0.5 + 0.1) / (mean + 0.1), 0.1 / (mean + 0.1)]
    expected = [min(2.0, max(0.5, f)) for f in expected]
    torch.testing.assert_close(rule.factor, torch.tensor(expected))
    # second batch: class 2 all right, class 0 absent
    rule.observe(logits_for([2, 2], 3), torch.tensor([2, 2]), ignore_index=255)
    torch.testing.assert_close(rule.error, torch.tensor([0.125, 0.5, 0.0]))
    assert int(rule.updates) == 2
    # the loss uses margin * factor
    base = torch.tensor([1.0, 2.0, 3.0])
    torch.testing.assert_close(rule(base, 3), base * rule.factor)


def test_error_rule_bounds():
    rule = ErrorDrivenMargins(momentum=1.0, eps=1e-3, min_factor=0.8, max_factor=1.5)
    # class 0 always wrong, classes 1..3 always right: raw ratios 4 and ~0.004
    t = torch.tensor([0, 1, 2, 3])
    rule.observe(logits_for([1, 1, 2, 3], 4), t, ignore_index=-100)
    torch.testing.assert_close(rule.factor, torch.tensor([1.5, 0.8, 0.8, 0.8]))


def test_error_rule_drives_hem_plus_margins():
    crit = HEMPlusLoss(class_counts=[90, 10], margin_rule=dict(type="error", momentum=1.0))
    base = crit.margin.clone()
    torch.testing.assert_close(crit.margins, base)  # factor 1 before any batch
    x = logits_for([0, 0, 0, 0], 2).requires_grad_()
    t = torch.tensor([0, 0, 1, 1])  # class 1 always wrong
    loss = crit(x, t)
    factor = crit.margin_rule.factor
    assert factor[1] > 1 > factor[0]
    torch.testing.assert_close(loss, hem_loss(x, t, base * factor))
    torch.testing.assert_close(crit.margins, base * factor)
    # evaluation does not update
    crit.eval()
    before = crit.margin_rule.error.clone()
    crit(logits_for([1, 1], 2), torch.tensor([0, 0]))
    assert torch.equal(crit.margin_rule.error, before)


def test_error_rule_leaves_out_the_rows_a_call_ignores():
    """A toolkit that passes its ignore index with every call (mmseg): those rows are not
    observed, whatever the module's own ``ignore_index``."""
    rule = dict(type="error", momentum=1.0)
    per_call, dropped = (HEMPlusLoss(class_counts=[50, 30, 20], margin_rule=rule) for _ in range(2))
    x = logits_for([0, 0, 1, 1], 3).requires_grad_()
    per_call(x, torch.tensor([0, 1, 2, 2]), ignore_index=2)  # class 2's rows: ignored
    dropped(x[:2], torch.tensor([0, 1]))
    assert per_call.ignore_index == -100  # the module is unchanged
    torch.testing.assert_close(per_call.margin_rule.error, dropped.margin_rule.error)
    torch.testing.assert_close(per_call.margin_rule.factor, dropped.margin_rule.factor)


def test_a_call_with_a_rule_checks_its_inputs_once_before_the_rule_sees_them(monkeypatch):
    """The margin rule observes a batch after the call's one check: a bad call raises and
    leaves the rule's state as it was."""
    from hem_plugins.implementations import entry

    checks = []
    check = entry.check_logits_target
    monkeypatch.setattr(entry, "check_logits_target", lambda *a: checks.append(1) or check(*a))
    crit = HEMPlusLoss(class_counts=[50, 30, 20], margin_rule=dict(type="error", momentum=1.0))
    crit(logits_for([0, 1, 1], 3).requires_grad_(), torch.tensor([0, 1, 2])).backward()
    assert len(checks) == 1 and int(crit.margin_rule.updates) == 1
    with pytest.raises(ValueError, match="target shape"):
        crit(logits_for([0, 1, 1], 3), torch.tensor([0, 1]))
    with pytest.raises(ValueError, match="avg_factor"):
        crit(logits_for([0, 1, 1], 3), torch.tensor([0, 1, 2]), avg_factor=2.0, reduction="sum")
    assert int(crit.margin_rule.updates) == 1


def test_error_rule_state_dict_round_trip_into_a_fresh_module():
    crit = HEMPlusLoss(class_counts=[30, 10, 5], margin_rule="error")
    gen = torch.Generator().manual_seed(1)
    for _ in range(3):
        crit(torch.randn(16, 3, generator=gen), torch.randint(0, 3, (16,), generator=gen))
    sd = crit.state_dict()
    assert {"margin_rule.error", "margin_rule.factor", "margin_rule.updates"} <= set(sd)
    fresh = HEMPlusLoss(margin_rule="error")  # no counts, no rule state yet
    fresh.load_state_dict(sd)
    torch.testing.assert_close(fresh.margins, crit.margins)
    torch.testing.assert_close(fresh.margin_rule.error, crit.margin_rule.error)
    x, t = torch.randn(16, 3, generator=gen), torch.randint(0, 3, (16,), generator=gen)
    torch.testing.assert_close(fresh(x, t), crit(x, t))
    torch.testing.assert_close(fresh.margin_rule.error, crit.margin_rule.error)
    # a checkpoint with a rule does not load silently into a loss without one
    with pytest.raises(RuntimeError, match="margin_rule"):
        HEMPlusLoss(class_counts=[30, 10, 5]).load_state_dict(sd)


def test_error_rule_grows_with_the_head():
    crit = HEMPlusLoss(margin_rule="error", num_samples=100)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        crit(torch.randn(8, 2), torch.randint(0, 2, (8,)))
        crit(torch.randn(8, 4), torch.randint(0, 4, (8,)))
    assert crit.margin_rule.error.numel() == 4 and crit.margins.numel() == 4


# -- scheduled rule -------------------------------------------------------------------


def test_scheduled_rule_by_hand():
    crit = HEMPlusLoss(
        class_counts=[90, 10],
        margin_rule=dict(type="scheduled", warmup_steps=4, start_factor=0.2),
    )
    base = crit.margin.clone()
    torch.testing.assert_close(crit.margins, 0.2 * base)
    x, t = torch.randn(6, 2), torch.tensor([0, 1, 0, 1, 0, 0])
    factors = []
    for _ in range(6):
        loss = crit(x, t)
        factors.append(float(crit.margin_rule.factor[0]))
    # the k-th forward uses t = k / 4 (counted before the margins are read)
    expected = [0.2 + 0.8 * min(1.0, k / 4) for k in range(1, 7)]
    assert factors == pytest.approx(expected)
    torch.testing.assert_close(loss, hem_loss(x, t, base))
    # cosine
    rule = ScheduledMargins(warmup_steps=2, start_factor=0.0, shape="cosine")
    rule.observe(torch.zeros(1, 3), torch.zeros(1, dtype=torch.long), -100)
    assert float(rule.factor[0]) == pytest.approx((1 - math.cos(math.pi / 2)) / 2)


def test_scheduled_rule_progress_signal_and_state_dict():
    crit = HEMPlusLoss(class_counts=[5, 5], margin_rule=dict(type="scheduled", warmup_steps=100))
    crit.margin_rule.set_progress(0.5)
    crit(torch.randn(4, 2), torch.tensor([0, 1, 0, 1]))  # counts a step, progress rules
    assert float(crit.margin_rule.factor[0]) == pytest.approx(0.1 + 0.9 * 0.5)
    fresh = HEMPlusLoss(class_counts=[5, 5], margin_rule=dict(type="scheduled", warmup_steps=100))
    fresh.load_state_dict(crit.state_dict())
    assert int(fresh.margin_rule.step) == 1
    assert fresh.margin_rule.current_progress() == 0.5
    torch.testing.assert_close(fresh.margins, crit.margins)


# -- bad options ----------------------------------------------------------------------


@pytest.mark.parametrize(
    "spec, match",
    [
        ("nope", "unknown margin_rule type 'nope'"),
        (dict(momentum=0.1), "needs a 'type'"),
        (dict(type="error", momentum=0.0), r"momentum must be a finite number in \(0, 1\]"),
        (dict(type="error", momentum=1.5), "momentum"),
        (dict(type="error", min_factor=1.2), "min_factor"),
        (dict(type="error", max_factor=0.9), "max_factor"),
        (dict(type="error", eps=0), "eps"),
        (dict(type="error", power=float("nan")), "power"),
        (dict(type="error", gain=2), "unexpected keyword argument 'gain'"),
        ("scheduled", "warmup_steps"),
        (dict(type="scheduled", warmup_steps=0), "warmup_steps must be a positive integer"),
        (dict(type="scheduled", warmup_steps=2.5), "warmup_steps must be a positive integer"),
        (dict(type="scheduled", warmup_steps=10, start_factor=2), "start_factor"),
        (dict(type="scheduled", warmup_steps=10, shape="step"), "shape must be one of"),
    ],
)
def test_bad_options_give_clear_errors(spec, match):
    with pytest.raises(ValueError, match=match):
        HEMPlusLoss(class_counts=[1, 1], margin_rule=spec)


def test_bad_rule_type_and_progress():
    with pytest.raises(TypeError, match="margin_rule must be None"):
        build_margin_rule(3)
    with pytest.raises(ValueError, match="progress"):
        ScheduledMargins(10).set_progress(1.5)


# -- DDP --------------------------------------------------------------------------------


def _ddp_worker(rank, world, port, out):
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=world)
    try:
        crit = HEMPlusLoss(class_counts=[40, 20, 10, 5], margin_rule="error")
        gen = torch.Generator().manual_seed(rank)  # different batches on each rank
        for _ in range(4):
            crit(torch.randn(32, 4, generator=gen), torch.randint(0, 4, (32,), generator=gen))
        out[rank] = (crit.margins.clone(), crit.margin_rule.error.clone())
    finally:
        dist.destroy_process_group()


@pytest.mark.slow
def test_error_rule_is_all_reduced_across_ranks():
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    out = mp.Manager().dict()
    mp.spawn(_ddp_worker, args=(2, port, out), nprocs=2, join=True)
    assert set(out.keys()) == {0, 1}
    torch.testing.assert_close(out[0][0], out[1][0], rtol=0, atol=0)
    torch.testing.assert_close(out[0][1], out[1][1], rtol=0, atol=0)
    # and the statistics are those of the union of the ranks' batches
    rule = ErrorDrivenMargins()
    gens = [torch.Generator().manual_seed(r) for r in (0, 1)]
    for _ in range(4):
        xs, ts = [], []
        for g in gens:
            xs.append(torch.randn(32, 4, generator=g))
            ts.append(torch.randint(0, 4, (32,), generator=g))
        rule.observe(torch.cat(xs), torch.cat(ts), -100)
    torch.testing.assert_close(out[0][1], rule.error)
