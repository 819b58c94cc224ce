"""The mmseg side of :mod:`.e2e`: a config's model dict for one process, and a synthetic batch."""

from __future__ import annotations

import copy
from pathlib import Path

import torch


def as_list(cfg) -> list:
    return [] if cfg is None else list(cfg) if isinstance(cfg, (list, tuple)) else [cfg]


def swap_syncbn(cfg) -> None:
    """SyncBN needs a process group; a single process uses BN."""
    if isinstance(cfg, dict):
        if cfg.get("type") == "SyncBN":
            cfg["type"] = "BN"
        for v in cfg.values():
            swap_syncbn(v)
    elif isinstance(cfg, list):
        for v in cfg:
            swap_syncbn(v)


def load_model_cfg(config: str, size):
    """The config's model dict (BN, no pretrained weights) and the input size."""
    from mmengine.config import Config

    if config.startswith("mmseg::"):  # a config shipped inside the mmseg wheel
        import mmseg

        config = str(Path(mmseg.__file__).parent / ".mim" / "configs" / config[len("mmseg::") :])
    cfg = Config.fromfile(config)
    model_cfg = copy.deepcopy(cfg.model.to_dict() if hasattr(cfg.model, "to_dict") else cfg.model)
    swap_syncbn(model_cfg)
    model_cfg["pretrained"] = None
    if "backbone" in model_cfg:
        model_cfg["backbone"].pop("init_cfg", None)
    if size is None:
        size = tuple(cfg.get("crop_size") or model_cfg["data_preprocessor"].get("size"))
    model_cfg["data_preprocessor"]["size"] = tuple(size)
    return model_cfg, tuple(size)


def batch_of(batch: int, size, num_classes: int) -> dict:
    from mmengine.structures import PixelData
    from mmseg.structures import SegDataSample

    gen = torch.Generator().manual_seed(0)
    h, w = size
    inputs = [torch.randint(0, 256, (3, h, w), generator=gen, dtype=torch.uint8)] * batch
    samples = [
        SegDataSample(
            gt_sem_seg=PixelData(data=torch.randint(0, num_classes, (1, h, w), generator=gen)),
            metainfo=dict(img_shape=(h, w), ori_shape=(h, w), pad_shape=(h, w)),
        )
        for _ in range(batch)
    ]
    return {"inputs": inputs, "data_samples": samples}
