"""Differential fuzz: every implementation against the loop reference (``helpers/reference.py``).

A few hundred seeded random calls, each drawn over everything a call can vary: shapes
(spatial ones, empty batches, one class, more than 255 classes), dtypes, strided logits,
ignored rows, row weights and class weights (a tensor, a list or a tuple, with zeros),
per-class margins, ``p``, reductions, divisors, ``mask_value`` (masked units of -1000
and -inf), ``avg_factor`` (a number, 0 or a tensor), ``check_finite``, NaN and infinities
in the rows that take no part, non-finite values in rows that do, overflowing logits and
targets out of range. Each implementation (the ``implementation`` fixture) must give the
reference's values and gradients, or the same error with the same message
(``docs/design.md`` section 3, rules 12 and 13).

The values lie on a grid of 1/8 (logits, margins) and 1/4 (weights), small enough that
every dtype holds them exactly and the sums of errors are exact: an error never sits on
the threshold by rounding, so the kept set is the reference's in every dtype. Running
:func:`main` as a script (``python -m implementations.test_fuzz`` with ``tests/`` on the
path, under ``TRITON_INTERPRET=1``) compares the Triton kernels the same way; the test
at the end does that in a subprocess.
"""

from __future__ import annotations

import functools
import os
import random
import subprocess
import sys
from pathlib import Path
from typing import NamedTuple

import pytest
import torch
from helpers.reference import reference_hem

from hem_plugins import hem_loss, implementations

CASES = 300
EPS = torch.finfo(torch.float32).eps
NAN, INF = float("nan"), float("inf")


class Case(NamedTuple):
    logits: torch.Tensor
    target: torch.Tensor
    margin: float | torch.Tensor
    kwargs: dict
    probe: torch.Tensor | None  # 'none': the gradient of (loss * probe).sum()
    want: tuple[torch.Tensor, torch.Tensor] | str  # (loss, gradient), or the error's message


def _grid(gen, shape, step, lo, hi):
    """Uniform values on the grid ``step * k`` in ``[lo, hi]``, float64."""
    k = torch.randint(round(lo / step), round(hi / step) + 1, shape, generator=gen)
    return k.double() * step


def draw(seed: int) -> Case:
    """The random call of ``seed`` and what it must give."""
    rng = random.Random(seed)
    gen = torch.Generator().manual_seed(seed)
    c = rng.choice([1, 2, 3, 5, 19, 150, 300])
    spatial = rng.choice([(), (), (1,), (7,), (3, 4), (2, 0)] if c < 100 else [(), (2,)])
    rows_max = max(1, 400 // (c * max(1, torch.Size(spatial).numel())))
    n = 0 if rng.random() < 0.04 else rng.randint(1, min(6, rows_max))
    dtype = rng.choice([torch.float64, torch.float32, torch.float32, torch.float16, torch.bfloat16])
    x = _grid(gen, (n, c, *spatial), 0.125, -6, 6)
    target = torch.randint(0, c, (n, *spatial), generator=gen)
    ignore_index = rng.choice([-100, 255])
    kwargs = dict(ignore_index=ignore_index, p=rng.choice([1, 1, 2]))
    kwargs["reduction"] = rng.choice(["mean", "mean", "sum", "none"])
    if rng.random() < 0.5:
        target[torch.rand(target.shape, generator=gen) < 0.3] = ignore_index
    if rng.random() < 0.5:
        margin = _grid(gen, (c,), 0.125, 0, 2)
    else:
        margin = rng.choice([0.0, 0.25, 1.0, 2.5])
    if rng.random() < 0.3:
        w = _grid(gen, target.shape, 0.25, 0, 2)
        kwargs["weight"] = w
    if rng.random() < 0.3:
        cw = _grid(gen, (c,), 0.25, 0.25, 2)
        if c > 2 and rng.random() < 0.5:
            cw[0] = 0
        kwargs["class_weight"] = rng.choice([cw, cw.tolist(), tuple(cw.tolist())])
    if kwargs["reduction"] != "sum" and rng.random() < 0.3 and c > 1:
        # masked units (Avalanche's IncrementalClassifier), never a target
        kwargs["mask_value"] = -1000.0
        x[:, -1] = rng.choice([-1000.0, -INF])
        target[target == c - 1] = ignore_index
    if kwargs["reduction"] == "mean" and rng.random() < 0.3:
        kwargs["divisor"] = rng.choice(["rows", "floor", ("floor", 0.5)])
    if kwargs["reduction"] != "sum" and rng.random() < 0.2:
        avg = rng.choice([0, 0.0, 7.5, 3])
        if avg == 0:  # mmseg's avg_factor of an all-ignored batch
            target[:] = ignore_index
        kwargs["avg_factor"] = torch.tensor(float(avg)) if rng.random() < 0.3 else avg
    kwargs["check_finite"] = rng.random() < 0.7

    # Where the values may break: rows that take no part, rows that do, overflow, targets.
    valid = _valid(target, c, kwargs)
    trouble = rng.random()
    broken = None
    if trouble < 0.25 and (~valid).any():
        bad = rng.choice([NAN, INF, -INF])
        _put(x, ~valid, bad, gen)  # ignored rows: they change nothing
    elif trouble < 0.35 and valid.any() and c > 1:
        broken = rng.choice(["nan", "inf", "target -inf", "overflow"])
        if broken == "overflow" and dtype in (torch.float16, torch.bfloat16):
            broken = "inf"  # computed in float32, half logits do not overflow
        _break(x, target, valid, broken, gen, dtype)
    elif trouble < 0.38 and target.numel():
        target.view(-1)[0] = c + 3  # outside [0, C): the same error everywhere

    logits = x.to(dtype)
    if logits.dim() > 2 and rng.random() < 0.5:  # strided: channels last
        logits = logits.movedim(1, -1).contiguous().movedim(-1, 1)
    elif logits.dim() == 2 and rng.random() < 0.3:
        logits = logits.t().contiguous().t()
    if "weight" in kwargs:
        kwargs["weight"] = kwargs["weight"].to(dtype)
    probe = None
    if kwargs["reduction"] == "none":
        probe = _grid(gen, target.shape, 0.25, -2, 2)
    return Case(
        logits, target, margin, kwargs, probe, _want(logits, target, margin, kwargs, probe, broken)
    )


def _valid(target, c, kwargs) -> torch.Tensor:
    """The rows that take part (``docs/design.md`` section 1)."""
    t = target.long()
    valid = (t != kwargs["ignore_index"]) & (t >= 0) & (t < c)
    if "weight" in kwargs:
        valid &= kwargs["weight"] != 0
    if "class_weight" in kwargs:
        cw = torch.as_tensor(kwargs["class_weight"], dtype=torch.float64)
        valid &= cw[torch.where(valid, t, 0)] != 0
    return valid


def _rows_at(x, rows, gen) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``(n, s, class)`` indices: one random entry in each of up to 3 of ``rows``."""
    where = torch.nonzero(rows.reshape(x.shape[0], -1))[:3]
    cls = torch.randint(0, x.shape[1], (len(where),), generator=gen)
    return where[:, 0], where[:, 1], cls


def _put(x, rows, value, gen) -> None:
    n, s, cls = _rows_at(x, rows, gen)
    x.view(x.shape[0], x.shape[1], -1)[n, cls, s] = value


def _break(x, target, valid, kind, gen, dtype) -> None:
    """Make the errors of the valid rows non-finite: ``kind`` names how."""
    x3 = x.view(x.shape[0], x.shape[1], -1)
    t3 = target.view(target.shape[0], -1)
    n, s, _ = _rows_at(x, valid, gen)
    n, s = n[:1], s[:1]
    t = t3[n, s]
    other = (t + 1) % x.shape[1]
    if kind == "nan":
        x3[n, other, s] = NAN
    elif kind == "inf":
        x3[n, other, s] = INF
    elif kind == "target -inf":
        x3[n, t, s] = -INF
    else:  # overflow: the difference of two logits exceeds the dtype
        big = 0.6 * torch.finfo(dtype).max
        x3[n, other, s] = big
        x3[n, t, s] = -big


def _want(logits, target, margin, kwargs, probe, broken):
    """The reference's (loss, gradient), or the message of the error every
    implementation must raise."""
    kw = dict(kwargs)
    check_finite = kw.pop("check_finite")
    c = logits.shape[1]
    bad_target = ((target != kw["ignore_index"]) & ((target < 0) | (target >= c))).any()
    if bad_target:
        return "outside"
    if broken is not None:
        if check_finite:
            return {
                "nan": "1 NaN",
                "inf": r"1 \+inf",
                "target -inf": "target logit of -inf",
                "overflow": "overflow",
            }[broken]
        loss_shape = target.shape if kw["reduction"] == "none" else ()
        return (
            torch.full(loss_shape, NAN, dtype=torch.float64),
            torch.full(logits.shape, NAN, dtype=torch.float64),
        )
    if target.numel() == 0:
        shape = target.shape if kw["reduction"] == "none" else ()
        return torch.zeros(shape, dtype=torch.float64), torch.zeros(
            logits.shape, dtype=torch.float64
        )
    if "class_weight" in kw:
        kw["class_weight"] = torch.as_tensor(kw["class_weight"], dtype=torch.float64)
    avg = kw.pop("avg_factor", None)
    valid = _valid(target, c, kwargs).unsqueeze(1)
    x = logits.detach().double().masked_fill(~valid, 0.0).requires_grad_(True)
    if avg is not None and kw["reduction"] == "mean":
        loss = reference_hem(x, target, margin, **{**kw, "reduction": "sum"})
        loss = loss / max(float(avg), EPS)
    else:
        loss = reference_hem(x, target, margin, **kw)
    if loss.requires_grad:
        (loss * probe if probe is not None else loss).sum().backward()
        grad = x.grad
    else:
        grad = torch.zeros(x.shape, dtype=torch.float64)
    return loss.detach(), grad


@functools.cache
def case(seed: int) -> Case:
    return draw(seed)


def run(case: Case):
    """``(loss, gradient)`` of ``case`` on the implementation the switch names."""
    x = case.logits.clone().requires_grad_(True)
    loss = hem_loss(x, case.target, case.margin, **case.kwargs)
    if loss.requires_grad:
        (loss * case.probe if case.probe is not None else loss).sum().backward()
    grad = x.grad if x.grad is not None else torch.zeros_like(x)
    return loss.detach(), grad


def check(name: str, seed: int) -> bool:
    """Compare implementation ``name`` with the reference on case ``seed``; False where
    ``name`` cannot run it."""
    c = case(seed)
    p = c.kwargs["p"]
    if implementations.cannot_run(name, c.logits, p) is not None:
        return False
    where = f"seed {seed} on {name}: {tuple(c.logits.shape)} {c.logits.dtype} {c.kwargs}"
    if isinstance(c.want, str):
        with pytest.raises(ValueError, match=c.want):
            run(c)
        return True
    got, got_grad = run(c)
    want, want_grad = c.want
    assert got.shape == want.shape, where
    assert got_grad.dtype == c.logits.dtype, where
    assert got.dtype == (torch.float64 if c.logits.dtype == torch.float64 else torch.float32)
    low = c.logits.dtype in (torch.float16, torch.bfloat16)
    exact = c.logits.dtype == torch.float64
    tol = dict(rtol=1e-12, atol=1e-12) if exact else dict(rtol=2e-6, atol=1e-6)
    torch.testing.assert_close(
        got.double(), want, equal_nan=True, **tol, msg=lambda m: f"{where}\n{m}"
    )
    if low:  # the gradient is rounded to the logits' dtype once
        tol = dict(rtol=1e-2, atol=1e-3)
    torch.testing.assert_close(
        got_grad.double(), want_grad, equal_nan=True, **tol, msg=lambda m: f"{where}\n{m}"
    )
    return True


@pytest.mark.parametrize("implementation", ["reference", "chunked", "cpu_kernel"], indirect=True)
def test_every_implementation_equals_the_reference(implementation, one_thread):
    ran = sum(check(implementation, seed) for seed in range(CASES))
    assert ran > CASES // 3  # the kernel skips p = 2 and float16


def test_the_cases_reach_every_edge():
    """The draw covers what the module says it covers."""
    seen = set()
    for seed in range(CASES):
        c = case(seed)
        kw = c.kwargs
        seen.add(("want", "error" if isinstance(c.want, str) else "values"))
        if not isinstance(c.want, str) and torch.isnan(c.want[0]).any():
            seen.add("nan result")
        if not torch.isfinite(c.logits).all() and not isinstance(c.want, str):
            seen.add("non-finite logits with a finite or NaN result")
        seen.add(("dtype", c.logits.dtype))
        seen.add(("reduction", kw["reduction"]))
        seen.add(("p", kw["p"]))
        seen.add(("spatial", c.logits.dim() > 2))
        seen.add(("strided", not c.logits.is_contiguous()))
        seen.add(("empty", c.target.numel() == 0))
        seen.add(("class_weight", type(kw.get("class_weight")).__name__))
        seen.add(("avg_factor", type(kw.get("avg_factor")).__name__))
        seen.add(("mask_value", kw.get("mask_value")))
        seen.add(("divisor", str(kw.get("divisor"))))
        seen.add(("check_finite", kw["check_finite"]))
        seen.add(("margin", type(c.margin).__name__))
        seen.add(("weight", "weight" in kw))
        seen.add(("C", min(c.logits.shape[1], 256)))
    for want in [
        ("want", "error"),
        "nan result",
        "non-finite logits with a finite or NaN result",
        ("dtype", torch.bfloat16),
        ("dtype", torch.float16),
        ("reduction", "none"),
        ("p", 2),
        ("spatial", True),
        ("strided", True),
        ("empty", True),
        ("class_weight", "list"),
        ("class_weight", "tuple"),
        ("class_weight", "Tensor"),
        ("avg_factor", "Tensor"),
        ("avg_factor", "int"),
        ("mask_value", -1000.0),
        ("divisor", "('floor', 0.5)"),
        ("check_finite", False),
        ("margin", "Tensor"),
        ("weight", True),
        ("C", 1),
        ("C", 256),
    ]:
        assert want in seen, want


def main() -> None:
    """Compare the Triton kernels (under ``TRITON_INTERPRET=1``) with the reference on every
    case they take (``p = 1``, float32, float16 and bfloat16); exits non-zero on a mismatch."""
    if os.environ.get("TRITON_INTERPRET") != "1":
        raise SystemExit("run under TRITON_INTERPRET=1")
    cases = int(sys.argv[1]) if len(sys.argv) > 1 else CASES
    ran = 0
    with implementations.use("triton"):
        for seed in range(cases):
            ran += check("triton", seed)
    print(f"triton interpreter: {ran} fuzz cases match the reference")


TESTS = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_triton_kernels_equal_the_reference_under_the_interpreter():
    pytest.importorskip("triton")
    env = dict(os.environ, TRITON_INTERPRET="1")
    env["PYTHONPATH"] = os.pathsep.join([str(TESTS), env.get("PYTHONPATH", "")])
    proc = subprocess.run(
        [sys.executable, "-m", "implementations.test_fuzz", "120"],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-4000:]
    assert "fuzz cases match" in proc.stdout


if __name__ == "__main__":
    main()
