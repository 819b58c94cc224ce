"""What is timed: the shapes, the inputs and the losses."""

from __future__ import annotations

import argparse

import torch
import torch.nn.functional as F

from hem_plugins import HEMLoss, hem_loss, margin_for_dataset

IGNORE = 255
DEFAULT_SHAPES = ["4096x1000", "2x19x512x1024", "8x150x128x128"]
SMALL_SHAPES = [
    "32x10",
    "128x10",
    "256x100",
    "4096x1000",
    "2x19x256x512",
    "4x150x64x64",
    "2x19x512x1024",
    "8x150x128x128",
]
SMALL_BF16_SHAPES = ["2x19x512x1024", "8x150x128x128"]


def parse_shape(text: str) -> tuple[int, ...]:
    try:
        shape = tuple(int(v) for v in text.lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"shape must look like 2x19x512x1024, got {text!r}"
        ) from None
    if len(shape) < 2 or min(shape) < 1:
        raise argparse.ArgumentTypeError(
            f"shape needs N and C (and optional spatial dims), got {text!r}"
        )
    return shape


def parse_size(text: str) -> tuple[int, int]:
    try:
        h, w = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"size must look like 128x256, got {text!r}") from None
    return h, w


def shape_name(shape) -> str:
    return "x".join(map(str, shape))


def dtype_name(dtype: torch.dtype) -> str:
    return str(dtype).replace("torch.", "")


def make_inputs(shape, device, dtype, seed=0):
    """Random logits (requiring grad) and targets; maps get 5% ignored pixels, as mmseg labels."""
    gen = torch.Generator(device="cpu").manual_seed(seed)
    n, c, *spatial = shape
    logits = torch.randn(shape, generator=gen).to(device=device, dtype=dtype)
    target = torch.randint(0, c, (n, *spatial), generator=gen)
    if spatial:
        target[torch.rand(target.shape, generator=gen) < 0.05] = IGNORE
    return logits.requires_grad_(True), target.to(device)


def loss_fns(shape, device) -> dict:
    """``ce``: ``F.cross_entropy``; ``hem_loss``: the function; ``hem``: the ``HEMLoss`` module.

    The margin is that of Cityscapes' 2975 training images for maps, of 50 000
    samples for ``(N, C)`` logits.
    """
    margin = margin_for_dataset(2975 if len(shape) > 2 else 50_000)

    def ce(x, t):
        return F.cross_entropy(x, t, ignore_index=IGNORE)

    def functional_hem(x, t):
        return hem_loss(x, t, margin, ignore_index=IGNORE)

    module = HEMLoss(margin=margin, ignore_index=IGNORE).to(device)
    return {"ce": ce, "hem_loss": functional_hem, "hem": module}
