"""Random inputs for comparing the loss with the reference: shapes, margins, weights, ignores."""

from __future__ import annotations

import random

import torch

CLASSES = [2, 3, 5, 19, 150]
SPATIAL = [(), (7,), (3, 4)]


def make_case(seed: int, dtype=torch.float64):
    rng = random.Random(seed)
    gen = torch.Generator().manual_seed(seed)
    c = CLASSES[seed % len(CLASSES)]
    spatial = SPATIAL[(seed // len(CLASSES)) % len(SPATIAL)]
    n = rng.randint(1, 6) if c < 100 else rng.randint(1, 3)
    logits = (torch.randn(n, c, *spatial, generator=gen) * rng.choice([0.3, 1.0, 3.0])).to(dtype)
    target = torch.randint(0, c, (n, *spatial), generator=gen)
    ignore_index = rng.choice([-100, 255])
    if rng.random() < 0.5:
        drop = torch.rand(target.shape, generator=gen) < 0.3
        target[drop] = ignore_index
    kwargs = dict(ignore_index=ignore_index, p=rng.choice([1, 2]))
    if rng.random() < 0.5:
        margin = torch.rand(c, generator=gen) * 2
    else:
        margin = rng.choice([0.0, 0.2, 1.0, 2.5])
    if rng.random() < 0.3:
        w = torch.rand(target.shape, generator=gen).to(dtype)
        w[torch.rand(target.shape, generator=gen) < 0.2] = 0
        kwargs["weight"] = w
    if rng.random() < 0.3:
        cw = torch.rand(c, generator=gen).to(dtype) + 0.1
        if c > 2 and rng.random() < 0.5:
            cw[0] = 0
        kwargs["class_weight"] = cw
    return logits, target, margin, kwargs, rng


def runs_on(implementation: str, logits: torch.Tensor, p: int) -> None:
    """Skip the test where ``implementation`` cannot run ``logits`` with this ``p`` (the C++
    kernel with ``p = 2`` or float16 logits: another parametrization covers the case)."""
    import pytest

    from hem_plugins.implementations import cannot_run

    if implementation != "auto":
        reason = cannot_run(implementation, logits, p)
        if reason is not None:
            pytest.skip(f"{implementation}: {reason}")
