"""ExperienceMarginsPlugin: margins from the counted training data, replay buffers, reporting, masks."""

from __future__ import annotations

import pytest
import torch
from avalanche.training import GDumb, Naive, Replay
from helpers.avalanche import quiet_evaluator, sgd, tiny_model

from hem_plugins import HEMLoss, HEMPlusLoss, class_margins, margin_for_dataset
from hem_plugins.avalanche import ExperienceMarginsPlugin


def labels(dataset) -> torch.Tensor:
    return torch.tensor([int(y) for y in dataset.targets])


def make(cls, criterion, digits_plugins=(), model=None, **kwargs):
    model = model or tiny_model()
    plugin = ExperienceMarginsPlugin()
    strategy = cls(
        model=model,
        optimizer=sgd(model),
        criterion=criterion,
        train_mb_size=128,
        train_epochs=1,
        plugins=[plugin, *digits_plugins],
        evaluator=quiet_evaluator(),
        **kwargs,
    )
    return strategy, plugin


@pytest.mark.slow
def test_hemplus_margins_without_replay(digits):
    criterion = HEMPlusLoss()
    strategy, plugin = make(Naive, criterion)
    for exp in digits.train_stream[:2]:
        strategy.train(exp)
        y = labels(exp.dataset)
        counts = torch.bincount(y, minlength=len(criterion.margins)).double()
        present = counts > 0
        # Exactly the classes of this experience, margins as class_margins of their counts.
        assert set(torch.nonzero(present).flatten().tolist()) == set(exp.classes_in_this_experience)
        expected = class_margins(counts)
        torch.testing.assert_close(criterion.margins[present], expected[present])
        torch.testing.assert_close(criterion.class_counts, counts)
    assert [r["experience"] for r in plugin.history] == [0, 1]
    # Published through the evaluator, with the experience index as x.
    metrics = strategy.evaluator.get_all_metrics()
    c = digits.train_stream[1].classes_in_this_experience[0]
    xs, values = metrics[f"HEM_Margin/Class{c:03d}"]
    assert xs == [1] and values[0] == pytest.approx(float(criterion.margins[c]))
    assert metrics["HEM_NumSamples"][1] == [len(e.dataset) for e in digits.train_stream[:2]]


@pytest.mark.slow
def test_hemplus_margins_count_the_replay_buffer(digits):
    criterion = HEMPlusLoss()
    strategy, plugin = make(Replay, criterion, mem_size=60)
    first, second = digits.train_stream[:2]
    strategy.train(first)
    replay = next(p for p in strategy.plugins if hasattr(p, "storage_policy"))
    buffer_y = labels(replay.storage_policy.buffer)
    assert len(buffer_y) == 60
    strategy.train(second)
    y = torch.cat([labels(second.dataset), buffer_y])  # each sample once
    counts = torch.bincount(y, minlength=len(criterion.margins)).double()
    torch.testing.assert_close(criterion.class_counts, counts)
    present = counts > 0
    assert int(present.sum()) == 4  # n = classes of the experience + classes in the buffer
    torch.testing.assert_close(criterion.margins[present], class_margins(counts)[present])
    assert plugin.history[-1]["num_samples"] == len(second.dataset) + 60


@pytest.mark.slow
def test_hem_margin_from_samples_and_gdumb_counted_once(digits):
    criterion = HEMLoss()
    strategy, _ = make(GDumb, criterion, mem_size=100)
    strategy.train(digits.train_stream[0])
    # GDumb trains on its buffer alone, which is the adapted dataset: counted once.
    assert float(criterion.num_samples) == 100
    assert float(criterion.margins) == pytest.approx(margin_for_dataset(100))


@pytest.mark.slow
def test_fixed_hem_margin_is_left_alone(digits):
    criterion = HEMLoss(margin=0.3)
    strategy, plugin = make(Naive, criterion)
    strategy.train(digits.train_stream[0])
    assert float(criterion.margins) == pytest.approx(0.3)
    assert plugin.history[0]["margin"] == pytest.approx(0.3)


@pytest.mark.slow
def test_plugin_takes_the_heads_mask_value(digits):
    criterion = HEMPlusLoss()
    strategy, _ = make(Naive, criterion, model=tiny_model(mask_value=-50.0))
    strategy.train(digits.train_stream[0])
    assert criterion.mask_value == -50.0


def test_plugin_ignores_other_criteria(digits):
    criterion = torch.nn.CrossEntropyLoss()
    strategy, plugin = make(Naive, criterion)
    strategy.train(digits.train_stream[0])
    assert plugin.history == []


def test_state_dict_round_trip(digits):
    criterion = HEMPlusLoss()
    strategy, plugin = make(Naive, criterion)
    strategy.train(digits.train_stream[0])
    fresh = ExperienceMarginsPlugin()
    fresh.load_state_dict(plugin.state_dict())
    assert fresh.history == plugin.history and len(fresh.history) == 1
    torch.testing.assert_close(fresh._counts, plugin._counts)


def test_criterion_config_takes_the_divisor():
    """``criterion = dict(type='HEMLoss', divisor='rows')`` (docs/divisor.md)."""
    from hem_plugins.benchmark.avalanche.registry import CRITERIA, ConfigError, build

    crit = build(CRITERIA, dict(type="HEMLoss", divisor="rows"), "criterion")
    assert crit.divisor == "rows"
    crit = build(CRITERIA, dict(type="HEMPlusLoss", divisor=("floor", 0.2)), "criterion")
    assert crit.divisor == ("floor", 0.2)
    with pytest.raises((ValueError, ConfigError), match="divisor"):
        build(CRITERIA, dict(type="HEMLoss", divisor="all"), "criterion")
