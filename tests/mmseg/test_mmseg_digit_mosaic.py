"""DigitMosaic: deterministic, mmseg layout, imbalanced, disjoint train/val sources."""

from __future__ import annotations

import numpy as np
import pytest

from hem_plugins.benchmark.mmseg import digit_mosaic as dm


def test_dataset_reads_through_mmseg_pipeline():
    from mmseg.registry import DATASETS

    pipeline = [dict(type="LoadImageFromFile"), dict(type="LoadAnnotations")]
    train = DATASETS.build(dict(type="DigitMosaicDataset", split="train", pipeline=pipeline))
    val = DATASETS.build(dict(type="DigitMosaicDataset", split="val", pipeline=pipeline))
    assert (len(train), len(val)) == (400, 100)
    assert len(train.metainfo["classes"]) == 11
    item = train[0]
    assert item["img"].shape == (64, 64, 3)
    assert item["gt_seg_map"].shape == (64, 64)
    assert set(np.unique(item["gt_seg_map"])) <= set(range(11))


def test_generation_is_deterministic(tmp_path):
    dm.generate_digit_mosaic(tmp_path)
    root = dm.digit_mosaic_root()
    for sub in ("img_dir/val/val_00007.png", "ann_dir/train/train_00123.png"):
        assert (tmp_path / sub).read_bytes() == (root / sub).read_bytes()


def test_train_and_val_sources_are_disjoint():
    from sklearn.datasets import load_digits

    digits = load_digits()
    pools = dm._split_sources(digits.images, digits.target, np.random.default_rng(0))
    for d in range(10):
        train = {a.tobytes() for a in pools["train"][d]}
        val = {a.tobytes() for a in pools["val"][d]}
        # Disjoint by index; identical-looking duplicates in sklearn's digits are rare.
        assert len(pools["train"][d]) + len(pools["val"][d]) == int((digits.target == d).sum())
        assert len(train & val) <= 1


# ---- the validation carve of the training images -------------------------------------------
LOAD = [dict(type="LoadImageFromFile"), dict(type="LoadAnnotations")]


def _build(**kw):
    from mmseg.registry import DATASETS

    return DATASETS.build(dict(type="DigitMosaicDataset", pipeline=LOAD, **kw))


def _paths(ds) -> list[str]:
    return [ds.get_data_info(i)["img_path"] for i in range(len(ds))]


def test_carve_splits_the_training_images_into_disjoint_parts_apart_from_the_test_images():
    carve = dict(fraction=0.2, seed=3)
    part = _build(split="train", carve=dict(carve, part="train"))
    val = _build(split="train", carve=dict(carve, part="val"))
    test = _build(split="val")
    every = _build(split="train")
    assert (len(part), len(val), len(test)) == (320, 80, 100)
    assert not set(_paths(part)) & set(_paths(val))
    assert sorted(_paths(part) + _paths(val)) == _paths(every)
    # Apart from the test images by content too, not only by file name.
    test_pixels = {np.asarray(test[i]["img"]).tobytes() for i in range(len(test))}
    assert not any(np.asarray(val[i]["img"]).tobytes() in test_pixels for i in range(len(val)))
    assert all("/img_dir/train/" in p for p in _paths(val))


def test_carve_follows_its_seed():
    a = dm.carve_indices(400, 0.2, seed=0)
    b = dm.carve_indices(400, 0.2, seed=0)
    c = dm.carve_indices(400, 0.2, seed=1)
    np.testing.assert_array_equal(a[1], b[1])
    assert set(a[1].tolist()) != set(c[1].tolist())
    assert len(a[1]) == 80 and not set(a[0].tolist()) & set(a[1].tolist())


@pytest.mark.parametrize(
    ("kw", "match"),
    [
        (dict(split="val", carve=dict(part="val")), "split='train'"),
        (dict(split="train", carve=dict(part="test")), r"carve\['part'\]"),
        (dict(split="train", carve=dict(part="val", fraction=1.5)), r"carve\['fraction'\]"),
        (dict(split="train", carve=dict(part="val", seed="x")), r"carve\['seed'\]"),
        (
            dict(split="train", carve=dict(part="val", frac=0.1)),
            r"unknown carve key\(s\) \['frac'\]",
        ),
    ],
)
def test_bad_carve_options_name_the_key(kw, match):
    with pytest.raises(ValueError, match=match):
        _build(**kw)


def test_margin_counts_see_only_the_training_part():
    """HEMMarginHook counts the dataset its config builds: with a carve, the 320 images."""
    from hem_plugins.mmseg.counts import build_count_dataset

    cfg = dict(type="DigitMosaicDataset", split="train", pipeline=LOAD,
               carve=dict(part="train", fraction=0.2, seed=0))  # fmt: skip
    assert len(build_count_dataset(cfg)) == 320
