"""mmengine registries of what an Avalanche config may name (needs mmengine).

``BENCHMARKS``, ``MODELS``, ``STRATEGIES``, ``CRITERIA``, ``PLUGINS``,
``OPTIMIZERS`` and ``LR_SCHEDULERS``. Register your own with
``@STRATEGIES.register_module()`` etc. :func:`build` builds a config dict and
names the config key in every error (unknown type with close matches,
unexpected arguments).
"""

from __future__ import annotations

import difflib
from typing import Any

import torch
from avalanche.models import MTSimpleMLP, SimpleCNN, SimpleMLP
from avalanche.training import (
    AGEM,
    EWC,
    GEM,
    MAS,
    Cumulative,
    GDumb,
    JointTraining,
    LwF,
    Naive,
    Replay,
    SynapticIntelligence,
)
from avalanche.training.plugins import (
    AGEMPlugin,
    EarlyStoppingPlugin,
    EWCPlugin,
    GDumbPlugin,
    GEMPlugin,
    LwFPlugin,
    MASPlugin,
    ReplayPlugin,
    SynapticIntelligencePlugin,
)
from mmengine.registry import Registry
from torch import nn

from hem_plugins.avalanche.plugin import ExperienceMarginsPlugin
from hem_plugins.avalanche.skip_settled import SkipSettledPlugin
from hem_plugins.modules import HEMLoss, HEMPlusLoss

from . import benchmarks, models

__all__ = [
    "BENCHMARKS",
    "CRITERIA",
    "ConfigError",
    "LR_SCHEDULERS",
    "MODELS",
    "OPTIMIZERS",
    "PLUGINS",
    "STRATEGIES",
    "build",
]


class ConfigError(ValueError):
    """A config names something unknown or passes arguments its target does not take."""


BENCHMARKS = Registry("avalanche benchmark")
MODELS = Registry("avalanche model")
STRATEGIES = Registry("avalanche strategy")
CRITERIA = Registry("avalanche criterion")
PLUGINS = Registry("avalanche plugin")
OPTIMIZERS = Registry("avalanche optimizer")
LR_SCHEDULERS = Registry("avalanche lr scheduler")

for _name in benchmarks.__all__:
    if _name[0].isupper():
        BENCHMARKS.register_module(name=_name, module=getattr(benchmarks, _name))
for _cls in (models.MLP, models.IncrementalMLP, models.MultiHeadMLP, SimpleMLP, MTSimpleMLP):
    MODELS.register_module(module=_cls)
MODELS.register_module(module=SimpleCNN)
for _cls in (
    Naive,
    Cumulative,
    JointTraining,
    Replay,
    GDumb,
    EWC,
    SynapticIntelligence,
    MAS,
    LwF,
    GEM,
    AGEM,
):
    STRATEGIES.register_module(module=_cls)
for _cls in (HEMLoss, HEMPlusLoss, nn.CrossEntropyLoss, nn.MultiMarginLoss):
    CRITERIA.register_module(module=_cls)
for _cls in (
    ExperienceMarginsPlugin,
    SkipSettledPlugin,
    ReplayPlugin,
    EWCPlugin,
    LwFPlugin,
    SynapticIntelligencePlugin,
    MASPlugin,
    GEMPlugin,
    AGEMPlugin,
    GDumbPlugin,
    EarlyStoppingPlugin,
):
    PLUGINS.register_module(module=_cls)
for _cls in (torch.optim.SGD, torch.optim.Adam, torch.optim.AdamW):
    OPTIMIZERS.register_module(module=_cls)
for _cls in (
    torch.optim.lr_scheduler.CosineAnnealingLR,
    torch.optim.lr_scheduler.StepLR,
    torch.optim.lr_scheduler.MultiStepLR,
    torch.optim.lr_scheduler.ConstantLR,
):
    LR_SCHEDULERS.register_module(module=_cls)


def build(registry: Registry, cfg: Any, key: str, **default_args: Any) -> Any:
    """Build ``cfg`` (a dict with ``type``) from ``registry``; errors name the config ``key``."""
    if not isinstance(cfg, dict) or "type" not in cfg:
        raise ConfigError(f"config key `{key}` must be a dict with a `type`, got {cfg!r}")
    args = dict(cfg)
    name = args.pop("type")
    known = sorted(registry.module_dict)
    if not isinstance(name, str) or name not in registry.module_dict:
        close = difflib.get_close_matches(str(name), known, n=3)
        hint = f" Did you mean {', '.join(repr(c) for c in close)}?" if close else ""
        raise ConfigError(
            f"config key `{key}.type`: {name!r} is not in the {registry.name} registry.{hint} "
            f"Known: {', '.join(known)}"
        )
    for k, v in default_args.items():
        args.setdefault(k, v)
    cls = registry.get(name)
    try:
        return cls(**args)
    except TypeError as exc:
        raise ConfigError(f"config key `{key}` (type={name!r}): {exc}") from exc
