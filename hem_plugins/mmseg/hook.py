"""``HEMMarginHook``: sets the margins of every HEM/HEM+ loss from the training set before training."""

from __future__ import annotations

import json
import os
from typing import Any

import torch
from mmengine import dist
from mmengine.hooks import Hook
from mmengine.model import is_model_wrapper
from mmseg.registry import HOOKS

from .. import modules as core
from .counts import build_count_dataset, count_pixels, dataset_fingerprint, margins_table
from .counts import write_counts as _write_counts

__all__ = ["HEMMarginHook", "hem_losses"]


def hem_losses(model: torch.nn.Module) -> list[tuple[str, torch.nn.Module]]:
    """``(name, loss)`` of every HEM/HEM+ loss in ``model`` (decode and auxiliary heads)."""
    if is_model_wrapper(model):
        model = model.module
    return [
        (name, m)
        for name, m in model.named_modules()
        if isinstance(m, (core.HEMLoss, core.HEMPlusLoss))
    ]


def _needs_data(loss: torch.nn.Module) -> bool:
    if isinstance(loss, core.HEMPlusLoss):
        return bool(loss.online)  # no counts given in the config
    return not bool(loss.margin_is_set)  # HEMLoss without margin


@HOOKS.register_module()
class HEMMarginHook(Hook):
    """Fill in HEM margins and HEM+ class counts from the training set, before training.

    For every ``HEMLoss`` without a margin and every ``HEMPlusLoss`` without
    ``class_counts`` in the model (decode and auxiliary heads), the hook
    counts the pixels per class of ``train_dataloader.dataset`` (as
    ``tools/class_counts.py`` does: the real dataset, annotations only, each
    image once) and calls ``set_class_counts(pixels, num_samples=num_images)``
    (HEM+) or ``set_num_samples(num_images)`` (HEM). Losses with margins or
    counts from the config, or restored from a checkpoint, are left alone.
    The counts are cached in the work dir as
    ``hem_class_counts_<fingerprint>.json``, keyed by the dataset's
    fingerprint (annotation paths and sizes, classes, label map), and reused.
    Before that it checks each loss's ``class_weight`` and ``class_counts``
    from the config against its head's ``num_classes`` (mmseg does not give a
    loss its head's ``num_classes``; without the hook the loss checks them
    against the logits at its first forward). Under DDP rank 0 counts (or reads the cache) and broadcasts the result;
    the hook then checks that every rank holds the same margins. It logs a
    table of all margins.

    Config::

        custom_hooks = [dict(type='HEMMarginHook')]

    Args:
        class_counts: path of a counts JSON to use instead of counting.
        num_workers: data-loader workers for counting.
        use_cache: read and write the work-dir cache.
    """

    priority = "NORMAL"

    def __init__(
        self, class_counts: str | None = None, num_workers: int = 2, use_cache: bool = True
    ) -> None:
        if class_counts is not None and not isinstance(class_counts, str):
            raise TypeError(f"HEMMarginHook: class_counts must be a path, got {class_counts!r}")
        if not isinstance(num_workers, int) or num_workers < 0:
            raise ValueError(f"HEMMarginHook: num_workers must be an int >= 0, got {num_workers!r}")
        self.class_counts = class_counts
        self.num_workers = num_workers
        self.use_cache = use_cache
        self.stats: dict[str, Any] | None = None

    # -- counting (rank 0) -------------------------------------------------
    def _compute(self, runner) -> dict[str, Any]:
        if self.class_counts is not None:
            from .losses import load_class_counts

            stats = load_class_counts(self.class_counts)
            runner.logger.info(f"HEMMarginHook: class counts from {self.class_counts}")
            return stats
        dataset_cfg = runner.cfg.get("train_dataloader", {}).get("dataset")
        if dataset_cfg is None:
            raise ValueError("HEMMarginHook needs train_dataloader.dataset in the config")
        dataset = build_count_dataset(dataset_cfg)
        fingerprint = dataset_fingerprint(dataset)
        cache = os.path.join(runner.work_dir, f"hem_class_counts_{fingerprint}.json")
        if self.use_cache and os.path.isfile(cache):
            try:
                with open(cache) as f:
                    stats = json.load(f)
                if stats.get("fingerprint") == fingerprint:
                    runner.logger.info(f"HEMMarginHook: class counts from the cache {cache}")
                    return stats
            except (OSError, json.JSONDecodeError):
                pass  # recount
        runner.logger.info(
            f"HEMMarginHook: counting the pixels per class of {len(dataset)} training images"
        )
        stats = count_pixels(dataset, num_workers=self.num_workers)
        if self.use_cache:
            _write_counts(stats, cache)
            runner.logger.info(f"HEMMarginHook: class counts cached in {cache}")
        return stats

    # -- hook --------------------------------------------------------------
    def before_train(self, runner) -> None:
        losses = hem_losses(runner.model)
        if not losses:
            runner.logger.warning("HEMMarginHook: the model has no HEMLoss / HEMPlusLoss")
            return
        from .losses import check_num_classes

        for name, loss in losses:  # the config's class_weight / class_counts vs the head
            num_classes = _head_num_classes(runner.model, name)
            if num_classes is not None:
                check_num_classes(loss, num_classes, name)
        todo = [(name, loss) for name, loss in losses if _needs_data(loss)]
        if todo:
            payload: list[Any] = [None]
            if dist.get_rank() == 0:
                try:
                    payload = [("ok", self._compute(runner))]
                except Exception as err:  # let every rank fail, not hang in broadcast
                    payload = [("error", f"{type(err).__name__}: {err}")]
            dist.broadcast_object_list(payload, src=0)
            status, value = payload[0]
            if status == "error":
                raise RuntimeError(f"HEMMarginHook could not count the classes: {value}")
            self.stats = value
            self._apply(runner, todo, value)
        self._check_same_on_all_ranks(losses)
        classes = list(self.stats["classes"]) if self.stats else []
        runner.logger.info("HEM/HEM+ margins:\n" + margins_table(losses, classes))

    def _apply(self, runner, todo, stats: dict[str, Any]) -> None:
        counts, num_images = stats["counts"], stats["num_images"]
        for name, loss in todo:
            if isinstance(loss, core.HEMPlusLoss):
                num_classes = _head_num_classes(runner.model, name)
                if num_classes is not None and num_classes != len(counts):
                    raise ValueError(
                        f"HEMMarginHook: the training set has {len(counts)} classes but "
                        f"{name} belongs to a head with num_classes={num_classes}"
                    )
                loss.set_class_counts(counts, num_samples=num_images)
            else:
                loss.set_num_samples(num_images)

    @staticmethod
    def _check_same_on_all_ranks(losses) -> None:
        if dist.get_world_size() == 1:
            return
        mine = [loss.margins.detach().cpu().tolist() for _, loss in losses]
        everyone = dist.all_gather_object(mine)
        if any(other != mine for other in everyone):
            raise RuntimeError(f"HEMMarginHook: ranks disagree on the margins: {everyone}")


def _head_num_classes(model: torch.nn.Module, loss_name: str) -> int | None:
    if is_model_wrapper(model):
        model = model.module
    parts = loss_name.split(".")
    for i in range(len(parts) - 1, 0, -1):
        head = model.get_submodule(".".join(parts[:i]))
        if isinstance(getattr(head, "num_classes", None), int):
            return head.num_classes
    return None
