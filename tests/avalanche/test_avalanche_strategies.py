"""The criterion swap in every supervised strategy Avalanche 0.6 ships."""

from __future__ import annotations

import math

import pytest
import torch
from avalanche.training import (
    AGEM,
    EWC,
    GEM,
    MAS,
    Cumulative,
    GDumb,
    JointTraining,
    LwF,
    Naive,
    Replay,
    SynapticIntelligence,
)
from helpers.avalanche import Recorder, quiet_evaluator, sgd, tiny_model

from hem_plugins import HEMLoss, hem_loss, margin_for_dataset
from hem_plugins.avalanche import ExperienceMarginsPlugin

STRATEGIES = {
    "Naive": (Naive, {}),
    "Cumulative": (Cumulative, {}),
    "JointTraining": (JointTraining, {}),
    "Replay": (Replay, {"mem_size": 40}),
    "GDumb": (GDumb, {"mem_size": 60}),
    "EWC": (EWC, {"ewc_lambda": 100.0}),
    "SynapticIntelligence": (SynapticIntelligence, {"si_lambda": 1.0}),
    "MAS": (MAS, {"lambda_reg": 1.0}),
    "LwF": (LwF, {"alpha": 1.0, "temperature": 2.0}),
    "GEM": (GEM, {"patterns_per_exp": 20}),
    "AGEM": (AGEM, {"patterns_per_exp": 20, "sample_size": 16}),
}


@pytest.mark.slow
@pytest.mark.parametrize("name", list(STRATEGIES))
def test_strategy_trains_with_hem(name, digits):
    cls, kwargs = STRATEGIES[name]
    model = tiny_model()
    criterion = HEMLoss()
    recorder = Recorder()
    strategy = cls(
        model=model,
        optimizer=sgd(model),
        criterion=criterion,
        train_mb_size=64,
        train_epochs=1,
        eval_mb_size=512,
        plugins=[recorder, ExperienceMarginsPlugin()],
        evaluator=quiet_evaluator(),
        **kwargs,
    )
    stream = digits.train_stream[:2]
    if cls is JointTraining:
        strategy.train(stream)
    else:
        for exp in stream:
            strategy.train(exp)
    assert recorder.criterion_losses and all(math.isfinite(v) for v in recorder.total_losses)
    # The plugin set the automatic margin from the samples trained on last (never the fallback).
    assert bool(criterion.margin_is_set) and float(criterion.num_samples) > 0
    assert float(criterion.margins) == pytest.approx(margin_for_dataset(criterion.num_samples))
    # The classification term the strategy computed is HEM on its output and targets.
    out, y, loss = recorder.outputs[-1]
    assert loss == pytest.approx(
        float(hem_loss(out, y, criterion.margins, mask_value=-1000.0)), rel=1e-5
    )
    accuracy = strategy.eval(digits.test_stream[:2])
    assert any(k.startswith("Top1_Acc_Stream") for k in accuracy)


@pytest.mark.slow
@pytest.mark.parametrize("name", ["LwF", "EWC"])
def test_regulariser_adds_to_hem_term_only(name, digits):
    """LwF's distillation / EWC's penalty are added on top of the criterion, as with CE."""
    cls, kwargs = STRATEGIES[name]
    model = tiny_model()
    recorder = Recorder()
    strategy = cls(
        model=model,
        optimizer=sgd(model),
        criterion=HEMLoss(margin=0.5),
        train_mb_size=64,
        train_epochs=1,
        plugins=[recorder],
        evaluator=quiet_evaluator(),
        **kwargs,
    )
    for exp in digits.train_stream[:2]:
        strategy.train(exp)
    out, y, loss = recorder.outputs[-1]
    assert loss == pytest.approx(float(hem_loss(out, y, 0.5, mask_value=-1000.0)), rel=1e-5)
    # In the second experience the regulariser's term is added after the criterion's.
    assert recorder.total_losses[-1] > recorder.criterion_losses[-1]
    assert torch.isfinite(torch.tensor(recorder.total_losses)).all()
