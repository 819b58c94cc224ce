"""DigitMosaic: deterministic, mmseg layout, imbalanced, disjoint train/val sources."""

from __future__ import annotations

import numpy as np

from hem_plugins.mmseg import digit_mosaic as dm


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
