"""Run a continual-learning experiment from an mmengine config (needs mmengine).

:func:`run` is what ``tools/continual.py`` calls; benchmarks call it directly.

Config keys (``configs/avalanche/`` has examples; ``_base_`` inheritance works)::

    benchmark = dict(type='SplitDigits', n_experiences=5, seed=0)
    model = dict(type='IncrementalMLP', input_size=64, hidden_sizes=[256])
    criterion = dict(type='HEMLoss')            # 'HEMPlusLoss', 'CrossEntropyLoss', 'MultiMarginLoss'
    optimizer = dict(type='SGD', lr=0.01, momentum=0.9)   # lr of every experience
    lr_scheduler = dict(type='CosineAnnealingLR')  # or None; restarted at every experience,
                                                  # stepped per epoch; T_max defaults to train_epochs
    strategy = dict(type='Replay', mem_size=200, train_mb_size=32,
                    train_epochs=10, eval_mb_size=512)   # epochs of every experience
    plugins = [dict(type='ExperienceMarginsPlugin')]
    loggers = dict(interactive=False, text=True, csv=True, tensorboard=True)
                                                  # text: the full log (Avalanche's TextLogger
                                                  # and the run's warnings) in work_dir/log.txt;
                                                  # interactive: progress bars on stdout
    eval_streams = ['test']                       # streams evaluated after every experience;
                                                  # 'valid' needs benchmark.validation_fraction
    seed = 0
    device = 'cpu'
    work_dir = None                               # default: work_dirs/<config name>

Every ``type`` is looked up in the registries of
:mod:`hem_plugins.benchmark.avalanche.registry`; an unknown top-level key, an unknown
type or a wrong argument raises :class:`~hem_plugins.benchmark.avalanche.registry.ConfigError`
naming the key.
"""

from __future__ import annotations

import contextlib
import difflib
import json
import re
import time
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TextIO

import torch
from avalanche.evaluation.metrics import (
    accuracy_metrics,
    bwt_metrics,
    forgetting_metrics,
    loss_metrics,
)
from avalanche.logging import CSVLogger, InteractiveLogger, TensorboardLogger, TextLogger
from avalanche.training import JointTraining
from avalanche.training.determinism.rng_manager import RNGManager
from avalanche.training.plugins import EvaluationPlugin, LRSchedulerPlugin
from mmengine.config import Config

from hem_plugins.avalanche.plugin import ExperienceMarginsPlugin

from .registry import (
    BENCHMARKS,
    CRITERIA,
    LR_SCHEDULERS,
    MODELS,
    OPTIMIZERS,
    PLUGINS,
    STRATEGIES,
    ConfigError,
    build,
)

__all__ = ["CONFIG_KEYS", "LOG_NAME", "DivergedError", "load_config", "resolve_work_dir", "run"]


class DivergedError(RuntimeError):
    """Training produced non-finite logits (the loss checks them); says in which experience."""


#: Top-level keys a config may hold (anything else is reported as a typo).
CONFIG_KEYS = {
    "benchmark",
    "model",
    "criterion",
    "optimizer",
    "lr_scheduler",
    "strategy",
    "plugins",
    "loggers",
    "eval_streams",
    "seed",
    "device",
    "work_dir",
}
_REQUIRED = ("benchmark", "model", "criterion", "optimizer", "strategy")
_LOGGER_KEYS = {"interactive", "csv", "tensorboard", "text"}
#: What each logger is when the config's ``loggers`` does not say.
_LOGGER_DEFAULTS = {"interactive": False, "text": True, "csv": True, "tensorboard": True}
#: The full log of a run (``loggers.text``), in its work dir.
LOG_NAME = "log.txt"

_EXP_ACC = re.compile(r"^Top1_Acc_Exp/eval_phase/(\w+?)_stream/Task(\d+)/Exp(\d+)$")


def load_config(config: str | Path | Config | dict, cfg_options: dict | None = None) -> Config:
    """Load ``config`` (a file, a ``Config`` or a dict), merge ``cfg_options`` and check its keys."""
    if isinstance(config, Config):
        cfg = Config(config.to_dict(), filename=config.filename)
    elif isinstance(config, dict):
        cfg = Config(dict(config))
    else:
        path = Path(config)
        if not path.is_file():
            raise FileNotFoundError(f"config file not found: {path}")
        cfg = Config.fromfile(str(path))
    if cfg_options:
        cfg.merge_from_dict(dict(cfg_options))
    keys = {k for k in cfg.keys() if not k.startswith("_")}
    unknown = sorted(keys - CONFIG_KEYS)
    if unknown:
        hints = []
        for k in unknown:
            close = difflib.get_close_matches(k, sorted(CONFIG_KEYS), n=1)
            hints.append(f"`{k}`" + (f" (did you mean `{close[0]}`?)" if close else ""))
        raise ConfigError(
            f"unknown config key(s) {', '.join(hints)}; known: {', '.join(sorted(CONFIG_KEYS))}"
        )
    missing = [k for k in _REQUIRED if cfg.get(k) is None]
    if missing:
        raise ConfigError(f"config lacks the key(s) {', '.join(f'`{k}`' for k in missing)}")
    loggers = cfg.get("loggers") or {}
    bad = sorted(set(loggers) - _LOGGER_KEYS)
    if bad:
        raise ConfigError(
            f"unknown key(s) {bad} in config key `loggers`; known: {sorted(_LOGGER_KEYS)}"
        )
    return cfg


def _plain(value: Any) -> Any:
    """ConfigDict / tuple -> plain dict / list, recursively."""
    if hasattr(value, "to_dict"):
        value = value.to_dict()
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    return value


def _evaluator(
    loggers_cfg: dict, work_dir: Path, log: TextIO | None
) -> tuple[EvaluationPlugin, list]:
    """Avalanche's ``EvaluationPlugin`` with the loggers ``loggers_cfg`` asks for; the text
    logger writes to ``log``."""
    on = {**_LOGGER_DEFAULTS, **loggers_cfg}
    loggers = []
    if on["interactive"]:
        loggers.append(InteractiveLogger())
    if log is not None:
        loggers.append(TextLogger(log))
    if on["csv"]:
        loggers.append(CSVLogger(log_folder=str(work_dir / "csv")))
    if on["tensorboard"]:
        loggers.append(TensorboardLogger(tb_log_dir=str(work_dir / "tb")))
    with warnings.catch_warnings():  # the run's own loggers are its choice, none included
        warnings.filterwarnings("ignore", message="No loggers specified")
        evaluator = EvaluationPlugin(
            accuracy_metrics(epoch=True, experience=True, stream=True),
            loss_metrics(epoch=True, experience=True, stream=True),
            forgetting_metrics(experience=True, stream=True),
            bwt_metrics(experience=True, stream=True),
            loggers=loggers,
        )
    return evaluator, loggers


@contextlib.contextmanager
def _full_log(path: Path | None) -> Iterator[TextIO | None]:
    """The open log file at ``path`` (None: no log), with the warnings raised inside the
    block written to it instead of stderr."""
    if path is None:
        yield None
        return
    with open(path, "w", encoding="utf-8") as log, warnings.catch_warnings():
        warnings.showwarning = lambda msg, cat, fn, ln, file=None, line=None: log.write(
            warnings.formatwarning(msg, cat, fn, ln, line)
        )
        yield log


def _experience_accuracies(results: dict, stream: str = "test") -> dict[int, float]:
    """``{experience index: accuracy}`` of ``stream`` in the evaluator's last results."""
    accs = {}
    for name, value in results.items():
        m = _EXP_ACC.match(name)
        if m and m.group(1) == stream:
            accs[int(m.group(3))] = float(value)
    return dict(sorted(accs.items()))


def _eval_streams(cfg: Config, benchmark) -> dict[str, Any]:
    """The streams named by the config's ``eval_streams`` (default ``['test']``)."""
    names = cfg.get("eval_streams") or ["test"]
    names = [names] if isinstance(names, str) else list(names)  # `eval_streams=valid` on the CLI
    streams = {}
    for name in names:
        stream = getattr(benchmark, f"{name}_stream", None)
        if stream is None:
            hint = " (set benchmark.validation_fraction)" if name == "valid" else ""
            raise ConfigError(
                f"config key `eval_streams`: the benchmark has no {name}_stream{hint}; "
                f"it has {sorted(s.name for s in benchmark.streams.values())}"
            )
        streams[name] = stream
    return streams


@torch.no_grad()
def experience_accuracy(model: torch.nn.Module, dataset, device, batch_size: int = 512) -> float:
    """Top-1 accuracy of ``model`` on an Avalanche dataset (task labels passed to multi-head
    models through ``avalanche_forward``), in eval mode; the model's mode is restored."""
    from avalanche.models.utils import avalanche_forward
    from torch.utils.data import DataLoader

    was_training = model.training
    model.eval()
    correct = total = 0
    loader = DataLoader(
        dataset.eval(), batch_size=batch_size, collate_fn=getattr(dataset, "collate_fn", None)
    )
    for x, y, t, *_ in loader:
        out = avalanche_forward(model, x.to(device), t.to(device))
        correct += int((out.argmax(1).cpu() == y).sum())
        total += len(y)
    model.train(was_training)
    return correct / max(total, 1)


_STREAM_KEYS = ("final_accuracy", "stream_accuracy", "forgetting", "bwt",
                "experience_accuracies", "accuracy_matrix")  # fmt: skip


def _stream_summary(results: dict, matrix: list[list[float]], stream: str) -> dict:
    """Final accuracy (mean over experiences), Avalanche's stream accuracy, forgetting, BWT,
    per-experience accuracies and the accuracy matrix of one evaluated stream."""
    exp_accs = _experience_accuracies(results, stream)
    prefix = f"eval_phase/{stream}_stream"
    return {
        "final_accuracy": sum(exp_accs.values()) / max(len(exp_accs), 1),
        "stream_accuracy": _stream_value(results, f"Top1_Acc_Stream/{prefix}"),
        "forgetting": _stream_value(results, f"StreamForgetting/{prefix}"),
        "bwt": _stream_value(results, f"StreamBWT/{prefix}"),
        "experience_accuracies": list(exp_accs.values()),
        "accuracy_matrix": matrix,
    }


def _stream_value(results: dict, prefix: str) -> float | None:
    values = [float(v) for k, v in results.items() if k.startswith(prefix)]
    return sum(values) / len(values) if values else None


def resolve_work_dir(cfg: Config, work_dir: str | Path | None = None) -> Path:
    """Where a run of ``cfg`` writes: ``work_dir``, else the config's ``work_dir``, else
    ``work_dirs/<config file stem>``."""
    if work_dir is None:
        work_dir = cfg.get("work_dir")
    if work_dir is None:
        stem = Path(cfg.filename).stem if cfg.filename else "continual"
        work_dir = Path("work_dirs") / stem
    return Path(work_dir)


def run(
    config: str | Path | Config | dict,
    cfg_options: dict | None = None,
    work_dir: str | Path | None = None,
    progress: Callable[[str], None] | None = None,
) -> dict:
    """Train and evaluate the strategy a config describes; return (and save) a summary.

    The strategy trains on each experience of the benchmark's train stream in
    turn (``JointTraining``: on all at once) and after each one is evaluated on
    the whole of every stream in the config's ``eval_streams`` (default the
    test stream; ``['valid']`` for a run that chooses hyper-parameters and must
    not see the test stream). After each experience the model's accuracy on
    that experience's training data is recorded too. Logs go to ``work_dir``
    (``log.txt``: Avalanche's text log and the warnings raised during the run;
    ``csv/``, ``tb/``) and the summary to ``work_dir/summary.json``.

    Args:
        config: path of an mmengine config file, a ``Config``, or a plain dict.
        cfg_options: overrides in mmengine's dotted form, e.g.
            ``{'optimizer.lr': 0.05, 'strategy.train_epochs': 5, 'seed': 1}``.
        work_dir: where logs and the summary go; default: the config's
            ``work_dir``, else ``work_dirs/<config file stem>``.
        progress: called with one line after each experience (its time, the
            accuracy on its training data and on the evaluated streams), e.g.
            ``print``; None: nothing.

    Returns:
        dict with ``final_accuracy`` (mean over experiences of the final
        per-experience test accuracy), ``stream_accuracy`` (Avalanche's
        sample-weighted stream accuracy), ``forgetting`` and ``bwt``
        (Avalanche's stream forgetting / backward transfer, final),
        ``experience_accuracies`` (final, per experience),
        ``accuracy_matrix`` (row k: accuracies on every test experience after
        training experience k) -- these of the test stream, None when it is not
        evaluated; ``streams`` (the same keys per evaluated stream, e.g.
        ``streams['valid']['final_accuracy']``); ``train_accuracy`` (mean over
        experiences of the accuracy on each experience's training data right
        after training on it) and ``train_accuracies``; ``margins``
        (:attr:`ExperienceMarginsPlugin.history`), ``config`` (the merged config),
        ``work_dir`` and ``seconds``.

    Raises:
        ConfigError: an unknown key, type or argument in the config.
        DivergedError: the logits became non-finite during training.
    """
    start = time.time()
    cfg = load_config(config, cfg_options)
    work_dir = resolve_work_dir(cfg, work_dir)
    work_dir.mkdir(parents=True, exist_ok=True)
    loggers_cfg = _plain(cfg.get("loggers") or {})
    text = {**_LOGGER_DEFAULTS, **loggers_cfg}["text"]
    with _full_log(work_dir / LOG_NAME if text else None) as log:
        strategy, streams, matrices, results, train_accs = _train(
            cfg, work_dir, loggers_cfg, log, progress
        )

    per_stream = {name: _stream_summary(results, matrices[name], name) for name in streams}
    margins = [
        r for p in strategy.plugins if isinstance(p, ExperienceMarginsPlugin) for r in p.history
    ]
    summary = {
        "config": _plain(cfg.to_dict()),
        **(per_stream.get("test") or dict.fromkeys(_STREAM_KEYS)),
        "streams": per_stream,
        "train_accuracy": sum(train_accs) / max(len(train_accs), 1),
        "train_accuracies": train_accs,
        "margins": margins,
        "work_dir": str(work_dir),
        "seconds": round(time.time() - start, 2),
    }
    (work_dir / "summary.json").write_text(json.dumps(summary, indent=2, default=str))
    return summary


def _train(
    cfg: Config,
    work_dir: Path,
    loggers_cfg: dict,
    log: TextIO | None,
    progress: Callable[[str], None] | None,
) -> tuple[Any, dict, dict, dict, list[float]]:
    """Build the strategy of ``cfg`` and train it on every experience:
    ``(strategy, evaluated streams, their accuracy matrices, the last results, the
    accuracies on each experience's training data)``."""
    seed = int(cfg.get("seed", 0))
    device = torch.device(cfg.get("device", "cpu"))
    RNGManager.set_random_seeds(seed)

    benchmark = build(BENCHMARKS, _plain(cfg.benchmark), "benchmark")
    model = build(MODELS, _plain(cfg.model), "model")
    criterion = build(CRITERIA, _plain(cfg.criterion), "criterion")
    optimizer = build(OPTIMIZERS, _plain(cfg.optimizer), "optimizer", params=model.parameters())
    plugins = [
        build(PLUGINS, _plain(p), f"plugins[{i}]") for i, p in enumerate(cfg.get("plugins") or [])
    ]
    strategy_cfg = _plain(cfg.strategy)
    sched_cfg = _plain(cfg.get("lr_scheduler"))
    if sched_cfg:
        if sched_cfg.get("type") == "CosineAnnealingLR":
            sched_cfg.setdefault("T_max", int(strategy_cfg.get("train_epochs", 1)))
        scheduler = build(LR_SCHEDULERS, sched_cfg, "lr_scheduler", optimizer=optimizer)
        plugins.append(LRSchedulerPlugin(scheduler, reset_scheduler=True, reset_lr=True))
    evaluator, loggers = _evaluator(loggers_cfg, work_dir, log)
    strategy = build(
        STRATEGIES,
        strategy_cfg,
        "strategy",
        model=model,
        optimizer=optimizer,
        criterion=criterion,
        plugins=plugins,
        evaluator=evaluator,
        device=device,
    )

    streams = _eval_streams(cfg, benchmark)
    matrices: dict[str, list[list[float]]] = {name: [] for name in streams}
    results: dict = {}
    train_accs: list[float] = []
    joint = isinstance(strategy, JointTraining)
    experiences = [benchmark.train_stream] if joint else benchmark.train_stream
    try:
        for k, experience in enumerate(experiences):
            began = time.time()
            try:
                strategy.train(experience)
            except ValueError as exc:
                if "logits contain" not in str(exc):
                    raise
                raise DivergedError(
                    f"training diverged in experience {k} (criterion "
                    f"{cfg.criterion.type}, lr {cfg.optimizer.get('lr')}): {exc}"
                ) from exc
            trained = [exp.dataset for exp in (experience if joint else [experience])]
            fits = [experience_accuracy(strategy.model, data, device) for data in trained]
            train_accs.extend(fits)
            for name, stream in streams.items():
                results = strategy.eval(stream)
                matrices[name].append(list(_experience_accuracies(results, name).values()))
            if progress is not None:
                head = "joint training" if joint else f"experience {k + 1}/{len(experiences)}"
                accs = [_progress_accuracy(n, matrices[n][-1], len(train_accs)) for n in streams]
                progress(
                    f"{head} ({time.time() - began:.1f} s): train acc "
                    f"{sum(fits) / len(fits):.3f} | " + " | ".join(accs)
                )
    finally:
        for logger in loggers:
            if hasattr(logger, "close"):
                logger.close()
    return strategy, streams, matrices, results, train_accs


def _progress_accuracy(stream: str, row: list[float], seen: int) -> str:
    """``'test acc 0.995 on the 2 seen, 0.398 on all 5'`` for one matrix row."""
    if not row:
        return f"{stream} acc -"
    mean = sum(row) / len(row)
    if seen >= len(row):
        return f"{stream} acc {mean:.3f} on all {len(row)} experiences"
    return (
        f"{stream} acc {sum(row[:seen]) / seen:.3f} on the {seen} seen, "
        f"{mean:.3f} on all {len(row)}"
    )
