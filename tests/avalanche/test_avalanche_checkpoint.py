"""Avalanche's save_checkpoint / maybe_load_checkpoint restore the criterion's margins."""

from __future__ import annotations

import pytest
import torch
from avalanche.checkpointing import maybe_load_checkpoint, save_checkpoint
from avalanche.training import Replay
from helpers.avalanche import quiet_evaluator, sgd, tiny_model

from hem_plugins import HEMPlusLoss
from hem_plugins.avalanche import ExperienceMarginsPlugin


def build():
    model = tiny_model(seed=1)
    return Replay(
        model=model,
        optimizer=sgd(model),
        criterion=HEMPlusLoss(),
        mem_size=40,
        train_mb_size=128,
        train_epochs=1,
        plugins=[ExperienceMarginsPlugin()],
        evaluator=quiet_evaluator(),
    )


@pytest.mark.slow
def test_checkpoint_restores_margins(digits, tmp_path):
    fname = tmp_path / "ckpt.pkl"
    strategy = build()
    for exp in digits.train_stream[:2]:
        strategy.train(exp)
    # With torch 2.14.1 and dill 0.4.1 the optimizer does not pickle under dill
    # ("Can't pickle sentinel"), even with plain cross-entropy: leave it out, as
    # save_checkpoint's `exclude` allows; the fresh strategy's optimizer is kept.
    save_checkpoint(strategy, str(fname), exclude=["optimizer"])
    margins = strategy._criterion.margins.clone()
    counts = strategy._criterion.class_counts.clone()

    fresh = build()
    assert fresh._criterion.margins.numel() == 0
    fresh, next_exp = maybe_load_checkpoint(fresh, str(fname))
    assert next_exp == 2
    torch.testing.assert_close(fresh._criterion.margins, margins)
    torch.testing.assert_close(fresh._criterion.class_counts, counts)
    assert not bool(fresh._criterion.online)
    # Training resumes with the restored state.
    fresh.train(digits.train_stream[2])
    assert (
        len(next(p for p in fresh.plugins if isinstance(p, ExperienceMarginsPlugin)).history) == 3
    )
