"""Train and test mmseg 1.x segmentors with mmengine's Runner (needs the ``mmseg`` extras).

What ``tools/train_seg.py`` and ``tools/test_seg.py`` call (they hold only the
command line, with the flags of mmseg's own ``tools/train.py`` / ``tools/test.py``),
and what the benchmark suite calls; the counterpart of
:mod:`hem_plugins.benchmark.avalanche.runner`::

    from hem_plugins.benchmark.mmseg.runner import train, fit, evaluate, test
    metrics = train('configs/mmseg/fcn-r18tiny_digitmosaic_hem.py', 'work_dirs/hem')
    metrics['mIoU']

    runner, val = fit(config, work_dir)           # keep the trained runner, then
    evaluate(runner, runner.cfg.test_dataloader)  # metrics on other data

DDP: ``launcher='pytorch'`` under torchrun (``tools/dist_train_seg.sh``); without
GPUs the process group is gloo and the model is wrapped without device ids.
"""

from __future__ import annotations

import contextlib
import os
import os.path as osp
from collections.abc import Iterator
from typing import Any

__all__ = ["build_cfg", "evaluate", "fit", "init_cpu_process_group", "mmengine_checkpoints",
           "test", "train"]  # fmt: skip


@contextlib.contextmanager
def mmengine_checkpoints() -> Iterator[None]:
    """Let ``torch.load`` read mmengine's own checkpoints (resume, ``load_from``).

    torch >= 2.6 loads with ``weights_only=True`` unless told otherwise, and
    mmengine 0.10.7 does not say otherwise, but its checkpoints hold the
    message hub's ``HistoryBuffer`` and numpy arrays, which that mode refuses
    ("Weights only load failed"). Within this context torch's own switch
    ``TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD=1`` is set: load only checkpoints you trust.
    """
    key = "TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD"
    old = os.environ.get(key)
    os.environ[key] = "1"
    try:
        yield
    finally:
        if old is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = old


def init_cpu_process_group(launcher: str) -> None:
    """Start the process group with gloo when there is no GPU.

    mmengine's ``init_dist`` calls ``torch.cuda.set_device``, which fails on a
    machine without GPUs; the Runner skips its own set-up when a group exists.
    """
    import torch

    if launcher == "none" or torch.cuda.is_available():
        return
    import torch.distributed as torch_dist

    if not torch_dist.is_initialized():
        torch_dist.init_process_group(backend="gloo")


def build_cfg(
    config: str,
    work_dir: str | None = None,
    cfg_options: dict[str, Any] | None = None,
    *,
    resume: bool | str = False,
    amp: bool = False,
    launcher: str = "none",
):
    """The mmengine ``Config`` of ``config`` with the command-line settings applied."""
    import torch
    from mmengine.config import Config

    if not osp.isfile(config):
        raise FileNotFoundError(f"config file {config!r} does not exist")
    cfg = Config.fromfile(config)
    cfg.launcher = launcher
    if cfg_options:
        cfg.merge_from_dict(cfg_options)
    if work_dir is not None:
        cfg.work_dir = work_dir
    elif cfg.get("work_dir") is None:
        cfg.work_dir = osp.join("./work_dirs", osp.splitext(osp.basename(config))[0])
    if amp:
        if cfg.optim_wrapper.get("type", "OptimWrapper") == "AmpOptimWrapper":
            pass
        else:
            cfg.optim_wrapper.type = "AmpOptimWrapper"
            cfg.optim_wrapper.loss_scale = "dynamic"
    if resume is True:
        cfg.resume = True
    elif isinstance(resume, str) and resume:
        cfg.resume = True
        cfg.load_from = resume
    if launcher != "none" and not torch.cuda.is_available():
        # DDP of a CPU module takes no device_ids (mmengine passes LOCAL_RANK by default).
        cfg.model_wrapper_cfg = dict(type="MMDistributedDataParallel", device_ids=None)
        cfg.setdefault("env_cfg", {}).setdefault("dist_cfg", {})["backend"] = "gloo"
    return cfg


def fit(
    config: str,
    work_dir: str,
    cfg_options: dict[str, Any] | None = None,
    *,
    resume: bool | str = False,
    amp: bool = False,
    launcher: str = "none",
    val_history: list | None = None,
):
    """Train ``config`` with mmengine's Runner: ``(runner, final validation metrics)``.

    The arguments are :func:`train`'s. The trained runner can then evaluate its model
    on other data with :func:`evaluate`. ``val_history``, when given, receives
    ``{"iter": i, **metrics}`` for every validation run of the training loop (the
    training curve on the validation data).
    """
    from mmengine.hooks import Hook
    from mmengine.runner import Runner

    cfg = build_cfg(config, work_dir, cfg_options, resume=resume, amp=amp, launcher=launcher)
    init_cpu_process_group(launcher)
    runner = Runner.from_cfg(cfg)

    final: dict[str, float] = {}

    class _KeepValMetrics(Hook):
        priority = "LOWEST"

        def after_val_epoch(self, runner, metrics=None) -> None:  # noqa: F811
            if metrics:
                final.clear()
                final.update({k: float(v) for k, v in metrics.items()})
                if val_history is not None:
                    val_history.append({"iter": int(runner.iter), **final})

    runner.register_hook(_KeepValMetrics())
    with mmengine_checkpoints():
        runner.train()
    return runner, final


def train(
    config: str,
    work_dir: str,
    cfg_options: dict[str, Any] | None = None,
    *,
    resume: bool | str = False,
    amp: bool = False,
    launcher: str = "none",
) -> dict[str, float]:
    """Train ``config`` with mmengine's Runner and return the final validation metrics.

    Args:
        config: path of an mmseg 1.x config (e.g. ``configs/mmseg/*.py``).
        work_dir: where logs, checkpoints and the class-count cache go.
        cfg_options: overrides in ``--cfg-options`` form, e.g.
            ``{'train_cfg.max_iters': 200, 'randomness.seed': 1}``.
        resume: True resumes from the latest checkpoint in ``work_dir``; a
            path resumes from that checkpoint.
        amp: train with automatic mixed precision (``AmpOptimWrapper``).
        launcher: ``'none'`` or ``'pytorch'`` (torchrun; gloo without GPUs).

    Returns:
        The metrics of the last validation run of the training loop (mmseg's
        ``IoUMetric``: ``{'aAcc', 'mIoU', 'mAcc'}``, in percent, as floats), or
        ``{}`` when the config has no validation loop. Every rank gets the
        same dict.
    """
    return fit(config, work_dir, cfg_options, resume=resume, amp=amp, launcher=launcher)[1]


def evaluate(runner, dataloader: dict, evaluator: dict | None = None) -> dict[str, float]:
    """Metrics of a trained ``runner``'s model on ``dataloader`` (a config dict), no training.

    Runs mmengine's ``TestLoop`` with ``evaluator`` (default: the config's
    ``test_evaluator``, mmseg's ``IoUMetric`` for the shipped configs) and returns its
    metrics as floats (``IoUMetric``: percent).
    """
    from mmengine.runner import TestLoop

    evaluator = evaluator if evaluator is not None else runner.cfg.test_evaluator
    metrics = TestLoop(runner, dataloader, evaluator).run()
    return {k: float(v) for k, v in metrics.items()}


def test(
    config: str,
    checkpoint: str,
    work_dir: str | None = None,
    cfg_options: dict[str, Any] | None = None,
    *,
    launcher: str = "none",
) -> dict[str, float]:
    """Run the config's test loop on ``checkpoint``; returns the test metrics (e.g. mIoU)."""
    from mmengine.runner import Runner

    if not osp.isfile(checkpoint):
        raise FileNotFoundError(f"checkpoint {checkpoint!r} does not exist")
    cfg = build_cfg(config, work_dir, cfg_options, launcher=launcher)
    cfg.load_from = checkpoint
    init_cpu_process_group(launcher)
    runner = Runner.from_cfg(cfg)
    with mmengine_checkpoints():
        metrics = runner.test()
    return {k: float(v) for k, v in metrics.items()}
