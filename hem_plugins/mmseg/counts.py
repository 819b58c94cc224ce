"""Pixels per class of an mmseg training set, read through its own dataset class.

Shared by :func:`count_config` (``tools/class_counts.py``) and
:class:`~hem_plugins.mmseg.HEMMarginHook`, so both give the same numbers. The training dataset is rebuilt from its
config with the pipeline cut down to its ``LoadAnnotations`` step (the images
are never decoded), so the dataset's own conventions apply: ``label_map`` for
a subset of classes, ``reduce_zero_label``, the annotation decoder. Wrappers
that repeat images (``RepeatDataset``, ``ClassBalancedDataset``) are unwrapped,
so every image counts once; ``ConcatDataset`` counts each part.
"""

from __future__ import annotations

import copy
import hashlib
import json
import os
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

__all__ = [
    "annotation_only_cfg",
    "build_count_dataset",
    "count_config",
    "count_pixels",
    "dataset_fingerprint",
    "default_counts_path",
    "write_counts",
]

FORMAT = "hem_plugins.class_counts/1"
_REPEATING_WRAPPERS = ("RepeatDataset", "ClassBalancedDataset")


def _load_annotations_step(pipeline: list) -> dict:
    for step in pipeline or []:
        if isinstance(step, dict) and str(step.get("type", "")).split(".")[-1] == "LoadAnnotations":
            return copy.deepcopy(dict(step))
    return dict(type="LoadAnnotations")


def annotation_only_cfg(dataset_cfg: dict) -> dict:
    """A copy of ``dataset_cfg`` whose pipelines only load annotations.

    Repeating wrappers are replaced by the dataset they wrap; ``ConcatDataset``
    parts are converted one by one.
    """
    cfg = copy.deepcopy(dict(dataset_cfg))
    kind = str(cfg.get("type", "")).split(".")[-1]
    if kind in _REPEATING_WRAPPERS:
        return annotation_only_cfg(cfg["dataset"])
    if "datasets" in cfg:
        cfg["datasets"] = [annotation_only_cfg(d) for d in cfg["datasets"]]
        return cfg
    if "dataset" in cfg and "pipeline" not in cfg:
        cfg["dataset"] = annotation_only_cfg(cfg["dataset"])
        return cfg
    cfg["pipeline"] = [_load_annotations_step(cfg.get("pipeline", []))]
    # Every image counts, also those a training filter would drop.
    cfg.pop("indices", None)
    return cfg


def build_count_dataset(dataset_cfg: dict):
    """Build the annotation-only dataset of ``dataset_cfg`` (mmseg scope)."""
    from mmengine.registry import init_default_scope
    from mmseg.registry import DATASETS

    init_default_scope("mmseg")
    return DATASETS.build(annotation_only_cfg(dataset_cfg))


def _metainfo(dataset) -> dict:
    meta = getattr(dataset, "metainfo", None)
    if meta is None and hasattr(dataset, "datasets"):
        meta = dataset.datasets[0].metainfo
    return dict(meta or {})


def dataset_fingerprint(dataset) -> str:
    """sha1 of the class names, ignore_index and, per image, annotation path, size and label map."""
    meta = _metainfo(dataset)
    h = hashlib.sha1()
    h.update(json.dumps([list(meta.get("classes", [])), _ignore_index(dataset)]).encode())
    for i in range(len(dataset)):
        info = dataset.get_data_info(i)
        path = str(info.get("seg_map_path"))
        size = os.path.getsize(path) if os.path.isfile(path) else -1
        label_map = info.get("label_map")
        label_map = sorted(label_map.items()) if label_map else None
        h.update(json.dumps([path, size, info.get("reduce_zero_label"), label_map]).encode())
    return h.hexdigest()[:16]


def _ignore_index(dataset) -> int:
    ds = dataset.datasets[0] if hasattr(dataset, "datasets") else dataset
    return int(getattr(ds, "ignore_index", 255))


class _PixelCounts(Dataset):
    """Per image: ``bincount`` of its label map over the classes (ignore_index left out)."""

    def __init__(self, dataset, num_classes: int, ignore_index: int) -> None:
        self.dataset, self.num_classes, self.ignore_index = dataset, num_classes, ignore_index

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, i: int) -> np.ndarray:
        seg = np.asarray(self.dataset[i]["gt_seg_map"]).ravel()
        seg = seg[seg != self.ignore_index].astype(np.int64)
        counts = np.bincount(seg, minlength=self.num_classes + 1)
        # Last slot: labels outside [0, C) that are not ignore_index.
        return np.concatenate([counts[: self.num_classes], [counts[self.num_classes :].sum()]])


def count_pixels(dataset, num_workers: int = 2, progress: bool = True) -> dict[str, Any]:
    """Count the labelled pixels per class of an annotation-only ``dataset``.

    Returns ``dict(counts, num_images, num_pixels, classes, ignore_index,
    fingerprint, format)``, what :class:`~hem_plugins.mmseg.HEMPlusLoss` reads.
    Labels outside ``[0, C)`` that are not ``ignore_index`` raise a ValueError.
    """
    meta = _metainfo(dataset)
    classes = list(meta.get("classes", []))
    if not classes:
        raise ValueError("the dataset has no 'classes' in its metainfo: cannot count per class")
    ignore_index = _ignore_index(dataset)
    # Its own generator: the loader's seed draw must not move the global RNG (the model's
    # dropout), or a run would differ with whether the work dir held cached counts.
    loader = DataLoader(_PixelCounts(dataset, len(classes), ignore_index), batch_size=None,
                        num_workers=num_workers, generator=torch.Generator())  # fmt: skip
    total = np.zeros(len(classes) + 1, dtype=np.int64)
    iterator = loader
    if progress:
        from rich.progress import track  # rich comes with mmengine

        iterator = track(loader, total=len(dataset), description="counting pixels")
    for counts in iterator:
        total += np.asarray(counts, dtype=np.int64)
    if total[-1]:
        raise ValueError(
            f"{int(total[-1])} labelled pixels hold values outside [0, {len(classes)}) that are "
            f"not ignore_index={ignore_index}: check num_classes / reduce_zero_label / label_map"
        )
    counts = total[:-1]
    if not counts.any():
        raise ValueError("the training set has no labelled pixel (all are ignore_index)")
    return dict(
        format=FORMAT,
        counts=[int(c) for c in counts],
        num_images=len(dataset),
        num_pixels=int(counts.sum()),
        classes=classes,
        ignore_index=ignore_index,
        fingerprint=dataset_fingerprint(dataset),
    )


def write_counts(stats: dict[str, Any], path: str) -> None:
    """Write ``stats`` as JSON (atomically: a temporary file renamed into place)."""
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    tmp = f"{path}.tmp{os.getpid()}"
    with open(tmp, "w") as f:
        json.dump(stats, f, indent=1)
    os.replace(tmp, path)


def default_counts_path(config: str) -> str:
    """``work_dirs/<config name>/class_counts.json``: where :func:`count_config` writes."""
    return os.path.join(
        "work_dirs", os.path.splitext(os.path.basename(config))[0], "class_counts.json"
    )


def count_config(
    config: str, out: str | None = None, workers: int = 2, cfg_options: dict | None = None
) -> dict[str, Any]:
    """Count the pixels per class of ``config``'s ``train_dataloader.dataset`` and write them.

    ``out`` defaults to :func:`default_counts_path`; ``cfg_options``
    are merged into the config first. Returns what :func:`count_pixels` returns.

    Raises:
        FileNotFoundError: ``config`` does not exist.
        ValueError: the config has no ``train_dataloader.dataset``.
    """
    from mmengine.config import Config

    if not os.path.isfile(config):
        raise FileNotFoundError(f"config file {config!r} does not exist")
    cfg = Config.fromfile(config)
    if cfg_options:
        cfg.merge_from_dict(cfg_options)
    dataset_cfg = cfg.get("train_dataloader", {}).get("dataset")
    if dataset_cfg is None:
        raise ValueError(f"{config}: the config has no train_dataloader.dataset")
    stats = count_pixels(build_count_dataset(dataset_cfg), num_workers=workers)
    write_counts(stats, out or default_counts_path(config))
    return stats


def margins_table(named_losses: list[tuple[str, torch.nn.Module]], classes: list[str]) -> str:
    """A text table of the margins of every HEM/HEM+ loss (one column per loss)."""
    from prettytable import PrettyTable

    table = PrettyTable()
    table.add_column("class", list(classes) or [str(i) for i in range(_width(named_losses))])
    n = len(table.rows)
    for name, loss in named_losses:
        margins = loss.margins.detach().cpu().flatten().tolist()
        if len(margins) == 1:
            margins = margins * n
        if len(margins) != n:
            margins = (margins + [float("nan")] * n)[:n]
        table.add_column(name, [f"{m:.4f}" for m in margins])
    return table.get_string()


def _width(named_losses) -> int:
    return max((loss.margins.numel() for _, loss in named_losses), default=1)
