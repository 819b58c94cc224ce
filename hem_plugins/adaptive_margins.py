r"""Margins that adapt during training: rules for :class:`hem_plugins.HEMPlusLoss`.

HEM+ fixes one margin per class from the class frequencies,
``mu[c] = sqrt(scale / (n * s[c]))``. A *margin rule* multiplies those margins by
a per-class factor that changes as training goes on; the loss then uses
``mu[c] * f[c]``. Two rules (equations, defaults and measurements in
``docs/adaptive_margins.md``):

* :class:`ErrorDrivenMargins` (``"error"``): ``f[c]`` follows a running (EMA)
  estimate of class ``c``'s training error rate, relative to the mean over the
  classes, clamped to ``[min_factor, max_factor]``. Classes the model gets wrong
  more often than average get larger margins. The batch statistics are
  all-reduced when ``torch.distributed`` is initialised, so every rank has the
  same margins.
* :class:`ScheduledMargins` (``"scheduled"``): every class's factor grows from
  ``start_factor`` to 1 (the HEM+ margin) over ``warmup_steps`` training
  forwards of the loss (linear or cosine), or follows a progress signal in
  ``[0, 1]`` set with :meth:`ScheduledMargins.set_progress`.

Both keep their state in buffers (``state_dict`` / resume) and update only in
training mode with gradients enabled (the rule of HEM+'s online counts). Build
one with :func:`build_margin_rule`, or pass the spec to the loss:
``HEMPlusLoss(class_counts, margin_rule="error")``,
``HEMPlusLoss(..., margin_rule=dict(type="scheduled", warmup_steps=1000))``.
Without a rule (the default) HEM+ is unchanged.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import torch
from torch import nn

from .implementations import registered_op

__all__ = ["ErrorDrivenMargins", "MarginRule", "ScheduledMargins", "build_margin_rule"]


def _number(name: str, value, *, low: float | None = None, high: float | None = None,
            low_open: bool = False, rule: str = "") -> float:  # fmt: skip
    """``value`` as a finite float within ``[low, high]`` (``(low, high]`` with ``low_open``)."""
    try:
        v = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"{rule}: {name} must be a number, got {value!r}") from None
    bad = not math.isfinite(v) or (low is not None and (v <= low if low_open else v < low))
    bad = bad or (high is not None and v > high)
    if bad:
        lo = "" if low is None else ("(" if low_open else "[") + f"{low:g}"
        hi = "inf)" if high is None else f"{high:g}]"
        raise ValueError(f"{rule}: {name} must be a finite number in {lo}, {hi}, got {value!r}")
    return v


def _distributed() -> bool:
    dist = torch.distributed
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


class MarginRule(nn.Module):
    """Base of the margin rules: a per-class factor on the HEM+ margins.

    A rule sees every training batch (:meth:`observe`, called by the loss before
    it computes its margins) and returns the margins to use (:meth:`forward`).
    Its state is in buffers, sized to the number of classes on first use (or
    on loading a checkpoint).
    """

    kind = ""

    def __init__(self) -> None:
        super().__init__()
        self.register_buffer("factor", torch.zeros(0, dtype=torch.float32))

    def observe(self, logits: torch.Tensor, target: torch.Tensor, ignore_index: int) -> None:
        """Update the state from one training batch (logits ``(N, C, ...)``, target ``(N, ...)``)."""
        raise NotImplementedError

    def _resize(self, num_classes: int, device: torch.device) -> None:
        """Grow the per-class buffers to ``num_classes`` (new classes start neutral)."""
        known = self.factor.numel()
        if known > num_classes:
            raise ValueError(
                f"{type(self).__name__} has state for {known} classes but the logits have "
                f"C={num_classes}"
            )
        self.factor = torch.cat(
            [self.factor.to(device), torch.ones(num_classes - known, device=device)]
        )

    def forward(self, margin: float | torch.Tensor, num_classes: int) -> torch.Tensor:
        """The margins to use: ``margin * factor``, ``(C,)`` float32 on ``margin``'s device."""
        if self.factor.numel() != num_classes:
            device = margin.device if isinstance(margin, torch.Tensor) else self.factor.device
            self._resize(num_classes, device)
        factor = self.factor
        if isinstance(margin, torch.Tensor):
            return margin * factor.to(margin.device)
        return factor * float(margin)

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        # Per-class state has the checkpoint's class count, which a fresh rule does not know.
        for name, buf in list(self._buffers.items()):
            key = prefix + name
            if buf is not None and buf.dim() == 1 and key in state_dict:
                self._buffers[name] = torch.empty_like(state_dict[key], device=buf.device)
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)


class ErrorDrivenMargins(MarginRule):
    r"""Per-class margins that follow each class's running training error.

    For every training batch, with ``n[c]`` the valid rows (pixels) of class
    ``c`` and ``w[c]`` those whose arg-max logit is not ``c`` (summed over ranks
    under ``torch.distributed``), every class present (``n[c] > 0``) updates

    .. math::

        e_c \leftarrow (1 - \beta)\, e_c + \beta\, w_c / n_c

    (absent classes keep ``e_c``; ``e_c`` starts at 0). The factor is

    .. math::

        f_c = \mathrm{clamp}\Big(\big((e_c + \epsilon) / (\bar e + \epsilon)\big)^{\gamma},
              f_{\min}, f_{\max}\Big),\qquad \bar e = \frac{1}{C}\sum_c e_c

    so a class with the mean error keeps its HEM+ margin, one with more error
    gets a larger margin (at most ``max_factor`` times), and when every error is
    small next to ``eps`` the factors return to 1. Before any batch ``f = 1``.

    Args:
        momentum: ``beta`` in ``(0, 1]`` (default 0.05: an average over ~20 batches).
        power: ``gamma`` >= 0 (default 1; 0 turns the rule off).
        eps: ``epsilon`` > 0 (default 0.01).
        min_factor, max_factor: the bounds, ``0 < min_factor <= 1 <= max_factor``
            (defaults 0.5 and 2).
    """

    kind = "error"

    def __init__(
        self,
        momentum: float = 0.05,
        power: float = 1.0,
        eps: float = 0.01,
        min_factor: float = 0.5,
        max_factor: float = 2.0,
    ) -> None:
        super().__init__()
        name = "ErrorDrivenMargins"
        self.momentum = _number("momentum", momentum, low=0.0, high=1.0, low_open=True, rule=name)
        self.power = _number("power", power, low=0.0, rule=name)
        self.eps = _number("eps", eps, low=0.0, low_open=True, rule=name)
        self.min_factor = _number("min_factor", min_factor, low=0.0, high=1.0, low_open=True,
                                  rule=name)  # fmt: skip
        self.max_factor = _number("max_factor", max_factor, low=1.0, rule=name)
        self.register_buffer("error", torch.zeros(0, dtype=torch.float32))
        self.register_buffer("updates", torch.zeros((), dtype=torch.int64))

    def _resize(self, num_classes: int, device: torch.device) -> None:
        known = self.error.numel()
        super()._resize(num_classes, device)
        self.error = torch.cat(
            [self.error.to(device), torch.zeros(num_classes - known, device=device)]
        )
        self._refresh_factor()

    def _refresh_factor(self) -> None:
        e = self.error
        if e.numel() == 0:
            return
        ratio = (e + self.eps) / (e.mean() + self.eps)
        self.factor = ratio.pow(self.power).clamp_(self.min_factor, self.max_factor)

    @torch.no_grad()
    def observe(self, logits: torch.Tensor, target: torch.Tensor, ignore_index: int) -> None:
        num_classes = logits.shape[1]
        if self.error.numel() != num_classes:
            self._resize(num_classes, logits.device)
        t = target.reshape(-1).long()
        pred = logits.detach().argmax(dim=1).reshape(-1)
        valid = (t >= 0) & (t < num_classes)
        if 0 <= ignore_index < num_classes:
            valid &= t != ignore_index
        t = torch.where(valid, t, torch.zeros_like(t))
        stats = torch.zeros(2, num_classes, dtype=torch.float64, device=t.device)
        stats[0].scatter_add_(0, t, valid.to(stats.dtype))
        stats[1].scatter_add_(0, t, (valid & (pred != t)).to(stats.dtype))
        if _distributed():
            torch.distributed.all_reduce(stats)
        n, w = stats[0], stats[1]
        present = n > 0
        rate = (w / n.clamp(min=1.0)).to(self.error.device, torch.float32)
        present = present.to(self.error.device)
        self.error = torch.where(present, self.error + self.momentum * (rate - self.error),
                                 self.error)  # fmt: skip
        self.updates += 1
        self._refresh_factor()

    def extra_repr(self) -> str:
        return (
            f"momentum={self.momentum:g}, power={self.power:g}, eps={self.eps:g}, "
            f"bounds=({self.min_factor:g}, {self.max_factor:g})"
        )


class ScheduledMargins(MarginRule):
    r"""Margins grown from ``start_factor`` times HEM+'s to HEM+'s over training.

    With progress ``t`` in ``[0, 1]``, every class's factor is

    .. math::

        f(t) = f_0 + (1 - f_0)\, s(t),\qquad s(t) = t \ \text{(linear)}\ \text{or}\
        (1 - \cos \pi t) / 2 \ \text{(cosine)}

    ``t = min(1, step / warmup_steps)``, ``step`` counting the loss's training
    forwards (identical on every rank under DDP: each rank runs the same
    steps; nothing is communicated), unless :meth:`set_progress` has set ``t``
    (an mmengine hook, or the Avalanche loop, can call it with
    ``iter / max_iters``); from then on the step count does not move ``t``.

    Args:
        warmup_steps: training forwards over which the factor reaches 1 (> 0).
        start_factor: ``f_0`` in ``[0, 1]`` (default 0.1).
        shape: ``"linear"`` (default) or ``"cosine"``.
    """

    kind = "scheduled"
    SHAPES = ("linear", "cosine")

    def __init__(self, warmup_steps: int, start_factor: float = 0.1, shape: str = "linear") -> None:
        super().__init__()
        name = "ScheduledMargins"
        if (
            isinstance(warmup_steps, bool)
            or not isinstance(warmup_steps, (int, float))
            or not (
                math.isfinite(warmup_steps)
                and warmup_steps > 0
                and warmup_steps == int(warmup_steps)
            )
        ):
            raise ValueError(
                f"{name}: warmup_steps must be a positive integer, got {warmup_steps!r}"
            )
        self.warmup_steps = int(warmup_steps)
        self.start_factor = _number("start_factor", start_factor, low=0.0, high=1.0, rule=name)
        if shape not in self.SHAPES:
            raise ValueError(f"{name}: shape must be one of {self.SHAPES}, got {shape!r}")
        self.shape = shape
        self.register_buffer("step", torch.zeros((), dtype=torch.int64))
        # -1: not set (the step count drives the schedule).
        self.register_buffer("progress", torch.tensor(-1.0, dtype=torch.float64))
        self._step, self._progress = 0, -1.0  # mirrors: no synchronisation per call
        self._mirrors_stale = False  # steps taken under torch.compile, in the buffers only

    def _load_from_state_dict(self, *args, **kwargs):
        super()._load_from_state_dict(*args, **kwargs)
        self._step, self._progress = int(self.step), float(self.progress)
        self._mirrors_stale = False
        self._refresh_factor()

    def set_progress(self, progress: float) -> None:
        """Drive the schedule by training progress in ``[0, 1]`` from now on."""
        p = _number("progress", progress, low=0.0, high=1.0, rule="ScheduledMargins")
        self.progress.fill_(p)
        self._progress = p
        self._refresh_factor()

    def current_progress(self) -> float:
        if self._mirrors_stale:
            self._step, self._progress = int(self.step), float(self.progress)
            self._mirrors_stale = False
        if self._progress >= 0:
            return self._progress
        return min(1.0, self._step / self.warmup_steps)

    def factor_at(self, t: float) -> float:
        s = t if self.shape == "linear" else (1.0 - math.cos(math.pi * t)) / 2.0
        return self.start_factor + (1.0 - self.start_factor) * s

    def _refresh_factor(self) -> None:
        if self.factor.numel():
            self.factor.fill_(self.factor_at(self.current_progress()))

    def _resize(self, num_classes: int, device: torch.device) -> None:
        super()._resize(num_classes, device)
        self._refresh_factor()

    def observe(self, logits: torch.Tensor, target: torch.Tensor, ignore_index: int) -> None:
        if self.factor.numel() != logits.shape[1]:
            self._resize(logits.shape[1], logits.device)
        self.step += 1
        if registered_op.compiling():
            # From the buffers: a Python counter would be a constant of the graph, and
            # every step would compile it again. The mirrors follow at the next eager step.
            self._mirrors_stale = True
            self.factor.fill_(self._factor_from_buffers())
            return
        if self._mirrors_stale:
            self._step, self._progress = int(self.step), float(self.progress)
            self._mirrors_stale = False
        else:
            self._step += 1
        self._refresh_factor()

    def _factor_from_buffers(self) -> torch.Tensor:
        """:meth:`factor_at` of the progress the buffers hold, in tensor ops (0-dim)."""
        by_steps = (self.step.double() / self.warmup_steps).clamp(max=1.0)
        t = torch.where(self.progress >= 0, self.progress, by_steps)
        s = t if self.shape == "linear" else (1.0 - torch.cos(math.pi * t)) / 2.0
        return self.start_factor + (1.0 - self.start_factor) * s

    def extra_repr(self) -> str:
        return (
            f"warmup_steps={self.warmup_steps}, start_factor={self.start_factor:g}, "
            f"shape={self.shape!r}"
        )


RULES: dict[str, type[MarginRule]] = {"error": ErrorDrivenMargins, "scheduled": ScheduledMargins}


def build_margin_rule(spec) -> MarginRule | None:
    """A margin rule from ``None``, a name (``"error"``, ``"scheduled"``), a dict with
    ``type`` and the rule's arguments, or a :class:`MarginRule` (returned as is)."""
    if spec is None or isinstance(spec, MarginRule):
        return spec
    if isinstance(spec, str):
        kind, kwargs = spec, {}
    elif isinstance(spec, Mapping):
        kwargs = dict(spec)
        if "type" not in kwargs:
            raise ValueError(
                f"margin_rule dict needs a 'type' ({' or '.join(map(repr, RULES))}), got {spec!r}"
            )
        kind = kwargs.pop("type")
    else:
        raise TypeError(
            "margin_rule must be None, a rule name, a dict with 'type', or a MarginRule; "
            f"got {type(spec).__name__}"
        )
    if kind not in RULES:
        raise ValueError(f"unknown margin_rule type {kind!r}; choose from {sorted(RULES)}")
    cls = RULES[kind]
    try:
        return cls(**kwargs)
    except TypeError as err:
        raise ValueError(f"margin_rule {kind!r}: {err}") from None
