"""The shipped real-dataset configs (``configs/mmseg/real/*.py``) load and train.

Each config is loaded with mmengine's ``Config.fromfile`` (its ``mmseg::`` base,
its ``custom_imports`` and the ``HEMMarginHook``), then trained 2 iterations by
mmengine's Runner on a tiny folder in the dataset's own layout (Cityscapes or
ADE20K, a few random PNG/JPEG images) on the CPU. Only what the CPU and the
offline test need changes: SyncBN -> BN, no pretrained weights (they come from
the network), a 64x64 crop, no validation and no checkpoint.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from helpers.seg import REAL_CONFIGS
from mmengine.config import Config
from PIL import Image

CROP = (64, 64)


def write_split(root: Path, img_dir: str, seg_dir: str, names: list[str], suffixes, labels, seed):
    """Random images and label maps (``labels``: the label values to draw from) in one split."""
    rng = np.random.default_rng(seed)
    img_suffix, seg_suffix = suffixes
    for name in names:
        img = rng.integers(0, 256, (48, 96, 3), dtype=np.uint8)
        seg = rng.choice(np.asarray(labels, dtype=np.uint8), size=(48, 96))
        for folder, suffix, array in ((img_dir, img_suffix, img), (seg_dir, seg_suffix, seg)):
            path = root / folder / f"{name}{suffix}"
            path.parent.mkdir(parents=True, exist_ok=True)
            Image.fromarray(array).save(path)


def cityscapes(root: Path) -> Path:
    """``leftImg8bit/{train,val}/<city>/*_leftImg8bit.png`` with ``gtFine/.../*_gtFine_labelTrainIds.png``."""
    labels = [*range(19), 255]
    for split, seed in (("train", 0), ("val", 1)):
        names = [f"aachen/aachen_{i:06d}_000019" for i in range(3)]
        write_split(root, f"leftImg8bit/{split}", f"gtFine/{split}", names,
                    ("_leftImg8bit.png", "_gtFine_labelTrainIds.png"), labels, seed)  # fmt: skip
    return root


def ade20k(root: Path) -> Path:
    """``images/{training,validation}/*.jpg`` with ``annotations/.../*.png`` (0: other, 1-150)."""
    for split, seed in (("training", 0), ("validation", 1)):
        names = [f"ADE_{split[:5]}_{i:08d}" for i in range(3)]
        write_split(root, f"images/{split}", f"annotations/{split}", names,
                    (".jpg", ".png"), range(151), seed)  # fmt: skip
    return root


def bn(cfg):
    """SyncBN -> BN everywhere (the CPU has no process group)."""
    if isinstance(cfg, dict):
        if cfg.get("type") == "SyncBN":
            cfg["type"] = "BN"
        for v in cfg.values():
            bn(v)
    elif isinstance(cfg, list):
        for v in cfg:
            bn(v)


def cpu_cfg(path: Path, data_root: Path, work_dir: Path) -> Config:
    """The config at ``path``, made to train 2 iterations on the CPU from ``data_root``."""
    cfg = Config.fromfile(str(path))
    bn(cfg.model)
    cfg.model.pretrained = None
    cfg.model.backbone.init_cfg = None
    cfg.model.data_preprocessor.size = CROP
    dataset = cfg.train_dataloader.dataset
    dataset.data_root = str(data_root)
    for step in dataset.pipeline:
        if step.type == "RandomResize":
            step.scale = (2 * CROP[1], CROP[0])
        elif step.type == "RandomCrop":
            step.crop_size = CROP
    cfg.train_dataloader.update(batch_size=2, num_workers=0, persistent_workers=False)
    cfg.train_cfg = dict(type="IterBasedTrainLoop", max_iters=2, val_interval=2)
    for key in ("val", "test"):
        cfg[f"{key}_dataloader"] = cfg[f"{key}_cfg"] = cfg[f"{key}_evaluator"] = None
    cfg.default_hooks.checkpoint = None
    cfg.default_hooks.logger = dict(type="LoggerHook", interval=1)
    cfg.work_dir = str(work_dir)
    cfg.randomness = dict(seed=0)
    return cfg


@pytest.mark.slow
@pytest.mark.parametrize("path", REAL_CONFIGS, ids=lambda p: p.name.split("_")[0])
def test_real_config_trains_two_iterations(path, tmp_path):
    from mmengine.runner import Runner

    from hem_plugins.mmseg import hem_losses

    layout = ade20k if "ade20k" in path.name else cityscapes
    cfg = cpu_cfg(path, layout(tmp_path / "data"), tmp_path / "work")
    assert cfg.custom_imports.imports == ["hem_plugins.mmseg"]
    runner = Runner.from_cfg(cfg)
    runner.train()
    assert runner.iter == 2
    losses = hem_losses(runner.model)
    assert losses and all(type(loss).__name__ == "HEMPlusLoss" for _, loss in losses)
    # HEMMarginHook counted the training set's pixels: 3 images of 48x96, ignored pixels apart
    for _, loss in losses:
        assert not bool(loss.online)
        assert 0 < float(loss.class_counts.sum()) <= 3 * 48 * 96
    scalars = runner.message_hub.log_scalars
    assert np.isfinite(scalars["train/loss"].current())
