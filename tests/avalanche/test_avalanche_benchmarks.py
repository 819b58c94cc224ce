"""The shipped benchmarks: SplitDigits, PermutedDigits, torchvision builders reading from disk."""

from __future__ import annotations

import pytest
import torch

from hem_plugins.benchmark.avalanche import (
    PermutedDigits,
    SplitCIFAR10,
    SplitCIFAR100,
    SplitDigits,
    SplitMNIST,
)


def test_split_digits_is_class_incremental(digits):
    assert len(digits.train_stream) == 5 and len(digits.test_stream) == 5
    classes = [set(e.classes_in_this_experience) for e in digits.train_stream]
    assert all(len(c) == 2 for c in classes)
    assert set().union(*classes) == set(range(10))
    for train, test in zip(digits.train_stream, digits.test_stream, strict=True):
        assert set(train.classes_in_this_experience) == set(test.classes_in_this_experience)
        assert train.task_label == 0
    n_train = sum(len(e.dataset) for e in digits.train_stream)
    n_test = sum(len(e.dataset) for e in digits.test_stream)
    assert n_train + n_test == 1797 and abs(n_test / 1797 - 0.3) < 0.01


def test_split_digits_is_seeded(digits):
    again = SplitDigits(n_experiences=5, seed=0)
    other = SplitDigits(n_experiences=5, seed=1)
    order = [e.classes_in_this_experience for e in digits.train_stream]
    assert order == [e.classes_in_this_experience for e in again.train_stream]
    assert order != [e.classes_in_this_experience for e in other.train_stream]
    x0 = digits.train_stream[0].dataset[0][0]
    assert torch.equal(x0, again.train_stream[0].dataset[0][0])
    with pytest.raises(ValueError, match="n_experiences"):
        SplitDigits(n_experiences=3)


def test_permuted_digits_is_domain_incremental():
    bm = PermutedDigits(n_experiences=3, seed=0)
    assert [sorted(e.classes_in_this_experience) for e in bm.train_stream] == [list(range(10))] * 3
    x = [e.dataset[0][0] for e in bm.train_stream]
    assert not torch.equal(x[0], x[1])
    assert torch.equal(x[0].sort().values, x[1].sort().values)  # same pixels, permuted


@pytest.mark.parametrize(
    "builder, expected",
    [
        (SplitMNIST, "MNIST/raw/train-images-idx3-ubyte"),
        (SplitCIFAR10, "cifar-10-batches-py/data_batch_1"),
        (SplitCIFAR100, "cifar-100-python/train"),
    ],
)
def test_torchvision_builders_name_missing_files(builder, expected, tmp_path):
    with pytest.raises(FileNotFoundError, match="nothing is downloaded") as info:
        builder(root=tmp_path)
    assert str(tmp_path / expected) in str(info.value)


def _write_idx(path, array):
    import numpy as np

    array = np.asarray(array, dtype=np.uint8)
    header = np.array([0x0800 + array.ndim], dtype=">i4").tobytes()
    dims = np.array(array.shape, dtype=">i4").tobytes()
    path.write_bytes(header + dims + array.tobytes())


def test_split_mnist_reads_local_files(tmp_path):
    """A tiny MNIST in torchvision's raw layout is read with download=False and split."""
    raw = tmp_path / "MNIST" / "raw"
    raw.mkdir(parents=True)
    gen = torch.Generator().manual_seed(0)
    for prefix, n in (("train", 40), ("t10k", 20)):
        _write_idx(
            raw / f"{prefix}-images-idx3-ubyte", torch.randint(0, 256, (n, 28, 28), generator=gen)
        )
        _write_idx(raw / f"{prefix}-labels-idx1-ubyte", torch.arange(n) % 10)
    bm = SplitMNIST(root=tmp_path, n_experiences=5, seed=0)
    assert len(bm.train_stream) == 5
    x, y, _ = bm.train_stream[0].dataset[0]
    assert x.shape == (784,) and int(y) in bm.train_stream[0].classes_in_this_experience


def test_corrupted_cifar_files_fail_clearly(tmp_path):
    folder = tmp_path / "cifar-10-batches-py"
    folder.mkdir()
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch", "batches.meta"]:
        (folder / name).write_bytes(b"not a pickle")
    with pytest.raises(FileNotFoundError, match="could not be read by torchvision"):
        SplitCIFAR10(root=tmp_path)


def _rows(stream) -> set[bytes]:
    return {x.numpy().tobytes() for e in stream for x, *_ in e.dataset}


def test_digit_benchmarks_test_on_one_split_whatever_the_seed():
    # the seed draws the class order (permutations) and the validation carve, not the test split
    a = SplitDigits(n_experiences=5, seed=0, validation_fraction=0.2)
    b = SplitDigits(n_experiences=5, seed=100, validation_fraction=0.2)
    test = _rows(a.test_stream)
    assert test == _rows(b.test_stream) and len(test) == 540
    for bm in (a, b):  # no seed trains or validates on a test image
        assert not (_rows(bm.train_stream) | _rows(bm.valid_stream)) & test
    p0, p1 = PermutedDigits(n_experiences=2, seed=0), PermutedDigits(n_experiences=2, seed=1)
    assert _rows(p0.test_stream[:1]) == _rows(p1.test_stream[:1]) == test  # identity experience
