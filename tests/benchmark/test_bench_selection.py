"""Selection never touches evaluation: one test split per dataset whatever the seed, and no
seed's validation carve or training subsample holds a test sample."""

from __future__ import annotations

import pytest
import torch

pytest.importorskip("sklearn")

from hem_plugins.benchmark import protocol  # noqa: E402
from hem_plugins.benchmark.data import load_dataset, long_tailed  # noqa: E402
from hem_plugins.benchmark.digits import TEST_SPLIT_SEED, load_digits_split  # noqa: E402
from hem_plugins.benchmark.training import validation_carve  # noqa: E402

SEEDS = (0, 1, 2, 100, 101)  # evaluated and tune seeds


def _rows(x: torch.Tensor) -> set[bytes]:
    return {r.numpy().tobytes() for r in x}


@pytest.mark.parametrize("dataset, options", [("digits", {}), ("mnist1d", {"num_samples": 500})])
def test_one_test_split_per_dataset_and_no_carve_holds_a_test_sample(dataset, options):
    if dataset == "mnist1d":
        pytest.importorskip("mnist1d")
    first = load_dataset(dataset, SEEDS[0], options)
    test = _rows(first.x_test)
    assert len(test) == len(first.y_test)  # no duplicate rows: row identity is sample identity
    for seed in SEEDS:
        split = load_dataset(dataset, seed, options)
        assert torch.equal(split.x_test, first.x_test) and torch.equal(split.y_test, first.y_test)
        assert not _rows(split.x_train) & test
        for data in (split, long_tailed(split, 10.0, seed)):
            part, x_val, _ = validation_carve(data, 0.2, seed)
            assert x_val.numel() and not _rows(x_val) & test
            assert not _rows(part.x_train) & test
    # the seed still varies the validation carve
    carves = [protocol.carve_validation(first.y_train, 0.2, s)[1] for s in SEEDS]
    assert len({tuple(c.tolist()) for c in carves}) == len(SEEDS)


def test_digits_split_seed_is_a_fixed_constant():
    x_tr, y_tr, x_te, y_te = load_digits_split(0.3)
    again = load_digits_split(0.3, TEST_SPLIT_SEED)
    assert all(torch.equal(a, b) for a, b in zip((x_tr, y_tr, x_te, y_te), again, strict=True))
    assert tuple(x_te.shape) == (540, 64)
