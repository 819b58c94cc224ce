"""One mmseg training iteration (forward, backward, SGD step): the config's loss against CE.

Both models are built by mmseg's registry (``MODELS.build``), so the loss
timed is the class a config's ``loss_decode=dict(type=...)`` gives users:
``hem_plugins.mmseg.HEMLoss`` / ``HEMPlusLoss`` around the core modules.
"""

from __future__ import annotations

import copy
import statistics
import time

import torch

from .mmseg_setup import as_list, batch_of, load_model_cfg
from .timing import synchronizer

CE_CFG = dict(type="CrossEntropyLoss", use_sigmoid=False, loss_weight=1.0)
NUM_IMAGES = 2975
"""Training-set size the margins are set for (Cityscapes' training set)."""


def _set_margins(model, data: dict, num_classes: int) -> None:
    """What ``HEMMarginHook`` does before training, from the benchmark batch's pixel counts.

    Losses with margins or counts from the config are left alone; the others
    get counts (HEM+) or a margin (HEM) for a training set of ``NUM_IMAGES``.
    """
    from hem_plugins import HEMLoss, HEMPlusLoss
    from hem_plugins.mmseg import hem_losses

    labels = torch.cat([s.gt_sem_seg.data.flatten() for s in data["data_samples"]])
    counts = torch.bincount(labels, minlength=num_classes).tolist()
    for _, loss in hem_losses(model):
        if isinstance(loss, HEMPlusLoss) and bool(loss.online):
            loss.set_class_counts(counts, num_samples=NUM_IMAGES)
        elif isinstance(loss, HEMLoss) and not bool(loss.margin_is_set):
            loss.set_num_samples(NUM_IMAGES)


def _loss_classes(model) -> dict[str, str]:
    """``{module name: class}`` of every head's loss module in ``model``."""
    from mmseg.models.decode_heads.decode_head import BaseDecodeHead

    out = {}
    for name, head in model.named_modules():
        if isinstance(head, BaseDecodeHead):
            for loss in as_list(head.loss_decode):
                out[f"{name}.loss_decode"] = f"{type(loss).__module__}.{type(loss).__qualname__}"
    return out


def bench_e2e(config, size, batch, repeats, device=None, swap_loss="HEMPlusLoss") -> dict:
    """Median time of one training iteration with the config's decode loss and with CE.

    A config whose decode loss is CE gets ``dict(type=swap_loss)`` for it. The
    CE model sets every head's loss (decode and auxiliary) to CE with the same
    total weight, so that only the losses under test differ.
    """
    from mmengine.optim import OptimWrapper
    from mmseg.registry import MODELS
    from mmseg.utils import register_all_modules

    import hem_plugins.mmseg  # noqa: F401  (registers HEMLoss, HEMPlusLoss)

    register_all_modules()
    model_cfg, (h, w) = load_model_cfg(config, size)
    num_classes = model_cfg["decode_head"]["num_classes"]
    given = model_cfg["decode_head"]["loss_decode"]
    if all(d["type"] == "CrossEntropyLoss" for d in as_list(given)):
        given = dict(type=swap_loss)
    data = batch_of(batch, (h, w), num_classes)
    models = {}
    for key in ("loss", "ce"):
        mc = copy.deepcopy(model_cfg)
        if key == "loss":
            mc["decode_head"]["loss_decode"] = given
        else:  # every head's loss becomes CE (an auxiliary head may use the loss under test too)
            for head_cfg in [mc["decode_head"]] + as_list(mc.get("auxiliary_head")):
                weight = sum(d.get("loss_weight", 1.0) for d in as_list(head_cfg["loss_decode"]))
                head_cfg["loss_decode"] = dict(CE_CFG, loss_weight=weight)
        torch.manual_seed(0)
        model = MODELS.build(mc)
        _set_margins(model, data, num_classes)
        if device is not None:
            model.to(device)
        model.train()
        optim = OptimWrapper(torch.optim.SGD(model.parameters(), lr=1e-3, momentum=0.9))
        models[key] = (model, optim)
    sync = synchronizer(device or torch.device("cpu"))

    def step(key) -> float:
        model, optim = models[key]
        sync()
        start = time.perf_counter()
        model.train_step(copy.copy(data), optim)
        sync()
        return time.perf_counter() - start

    step("loss"), step("ce")  # warm-up
    times = {"loss": [], "ce": []}
    for r in range(repeats):
        for key in ("loss", "ce") if r % 2 == 0 else ("ce", "loss"):
            times[key].append(step(key))
    ratios = [a / b for a, b in zip(times["loss"], times["ce"], strict=True)]
    return {
        "config": config,
        "input": f"{batch}x3x{h}x{w}",
        "loss": "+".join(d["type"] for d in as_list(given)),
        "loss_classes": _loss_classes(models["loss"][0]),
        "loss_ms": 1e3 * statistics.median(times["loss"]),
        "ce_ms": 1e3 * statistics.median(times["ce"]),
        "time_ratio": statistics.median(ratios),
        "repeats": repeats,
    }
