"""``nn.Module`` forms of HEM and HEM+ that keep their margins in buffers.

Margins, sample numbers and class counts are registered buffers: they are in
``state_dict()``, move with ``.to(device)`` and are restored on resume. The
toolkit plugins fill them in before training (``set_num_samples``,
``set_class_counts``); until then a documented fallback applies, with a
one-time warning.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Sequence

import torch
from torch import nn

from .adaptive_margins import MarginRule, build_margin_rule
from .implementations import registered_op
from .implementations.entry import (
    LossOptions,
    check_call,
    check_divisor,
    check_options,
    count_online,
    hem,
    small_call,
    takes_small_call,
    value_inputs,
)
from .margins import DEFAULT_SCALE, FALLBACK_MARGIN, class_margins, margin_for_dataset

__all__ = ["AVALANCHE_MASK_VALUE", "HEMLoss", "HEMPlusLoss"]

#: Value that Avalanche's ``IncrementalClassifier(masking=True)`` writes into the
#: units of classes not seen yet. The modules leave units holding it (or -inf)
#: out of the threshold by default, so a plain criterion swap gives the loss of
#: the active units alone; pass ``mask_value=None`` to count every unit.
AVALANCHE_MASK_VALUE = -1000.0


def _as_class_weight(class_weight: Sequence[float] | torch.Tensor | None) -> torch.Tensor | None:
    if class_weight is None:
        return None
    cw = torch.as_tensor(class_weight, dtype=torch.float32).detach().clone()
    if cw.dim() != 1:
        raise ValueError(f"class_weight must be 1-D, got shape {tuple(cw.shape)}")
    if not bool(torch.isfinite(cw).all()) or bool((cw < 0).any()):
        raise ValueError(f"class_weight must be finite and non-negative, got {cw.tolist()}")
    return cw


def _checkpoint_num_classes(state_dict, prefix: str) -> tuple[str, int] | None:
    """``(buffer, C)`` of a checkpoint of one of these losses: the size of its class counts,
    else of its class weights; None where it holds neither (or they are empty)."""
    for name in ("class_counts", "class_weight"):
        value = state_dict.get(prefix + name)
        if isinstance(value, torch.Tensor) and value.numel():
            return name, value.numel()
    return None


class _MarginLossBase(nn.Module):
    def __init__(
        self,
        *,
        scale: float,
        ignore_index: int,
        reduction: str,
        p: int,
        class_weight: Sequence[float] | torch.Tensor | None,
        mask_value: float | None,
        check_finite: bool,
        divisor: str | tuple[str, float] = "kept",
    ) -> None:
        super().__init__()
        check_options(reduction, p)
        self.divisor = divisor
        margin_for_dataset(1, scale)  # validates scale
        self.scale = float(scale)
        self.ignore_index = ignore_index
        self.reduction = reduction
        self.p = p
        self.mask_value = mask_value
        self.check_finite = check_finite
        self.register_buffer("class_weight", _as_class_weight(class_weight))
        # Number of training samples (segmentation: images); 0 while unknown.
        self.register_buffer("num_samples", torch.zeros((), dtype=torch.float64))
        self._warned = False

    @property
    def divisor(self) -> str | tuple[str, float]:
        """What ``'mean'`` divides by: ``"kept"``, ``"rows"``, ``"floor"`` or ``("floor", f)``
        (:func:`~hem_plugins.hem_loss`, ``docs/divisor.md``); validated when set."""
        return self._divisor_arg

    @divisor.setter
    def divisor(self, value: str | tuple[str, float]) -> None:
        self._divisor = check_divisor(value)  # (kind, f), what the loss call reads
        self._divisor_arg = value

    def _warn_once(self, message: str) -> None:
        if not self._warned:
            registered_op.warn(message, stacklevel=4)  # warnings.warn, also under torch.compile
            self._warned = True

    def _margin_for_forward(
        self, logits: torch.Tensor, target: torch.Tensor, ignore_index: int
    ) -> float | torch.Tensor:
        """The margin of this call (its inputs checked): a float (HEM) or ``(C,)`` (HEM+)."""
        raise NotImplementedError

    def _unchecked_margin(self) -> float | torch.Tensor | None:
        """The margin of a call that needs neither the targets nor a warning to find it
        (:meth:`_small_call`); None where it does."""
        return None

    def _small_call(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor | None:
        """The loss of a call with the module's own options, through the C++ kernel's
        small-call operator, which checks the inputs itself (:func:`~.implementations.entry.small_call`);
        None where it does not take the call, and :meth:`forward` runs the checked path."""
        reduction = self.reduction
        if takes_small_call(
            reduction, self.p, self._divisor[0], None, self._buffers["class_weight"], None
        ):
            margin = self._unchecked_margin()
            if margin is not None:
                return small_call(
                    logits, target, margin, self.ignore_index, self.mask_value, reduction == "sum"
                )
        return None

    def _refresh_mirrors(self) -> None:
        """Read the buffers the forward needs as Python values (once, after a load)."""

    def _num_classes(self) -> tuple[str, int] | None:
        """``(buffer, C)``: the number of classes this loss is built for and the buffer that
        says it (``class_weight``); None where it takes any (see :meth:`_load_from_state_dict`)."""
        cw = self._buffers.get("class_weight")
        return None if cw is None else ("class_weight", cw.numel())

    def _take_shapes(self, state_dict, prefix: str) -> None:
        """Give the buffers whose size follows the class set the checkpoint's sizes."""

    def _load_from_state_dict(
        self, state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys, error_msgs
    ):
        """Load as ``nn.Module`` does, after one check: a checkpoint whose number of classes
        (the size of its ``class_counts`` or ``class_weight``) differs from the one this
        loss is built for is refused, with a message that names both, and nothing of it is
        loaded. A loss built with no class counts and no class weights (counts learned
        online, or set later by a plugin or hook) takes the checkpoint's."""
        mine = self._num_classes()
        theirs = _checkpoint_num_classes(state_dict, prefix)
        if mine is not None and theirs is not None and mine[1] != theirs[1]:
            error_msgs.append(
                f"{type(self).__name__} is built for {mine[1]} classes (its {mine[0]}) but "
                f"the checkpoint's {prefix}{theirs[0]} has {theirs[1]}: build the loss for "
                f"{theirs[1]} classes, or with no class counts or weights to take the "
                "checkpoint's"
            )
            return
        self._take_shapes(state_dict, prefix)
        super()._load_from_state_dict(
            state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys, error_msgs
        )
        self._refresh_mirrors()

    def forward(
        self,
        logits: torch.Tensor,
        target: torch.Tensor,
        weight: torch.Tensor | None = None,
        avg_factor: float | torch.Tensor | None = None,
        reduction: str | None = None,
        ignore_index: int | None = None,
    ) -> torch.Tensor:
        """Loss of ``logits`` ``(N, C, ...)`` against ``target`` ``(N, ...)``; see :func:`hem_loss`.

        ``reduction`` and ``ignore_index`` override the module's own for this
        call (a toolkit that passes its ignore index with every call, as mmseg
        does, leaves the module unchanged); None: the module's.

        The margins and class weights are the module's own, checked when they
        were set: a call checks only the shapes of its inputs (no
        synchronisation) and the values of ``weight`` with the loss's other
        value checks. Margins are Python floats mirrored from the buffers
        (HEM) or tensors that stay on the module's device (HEM+).
        """
        if weight is None and avg_factor is None and ignore_index is None and not reduction:
            loss = self._small_call(logits, target)
            if loss is not None:
                return loss
        if not reduction:
            reduction = self.reduction
        class_weight = self._buffers["class_weight"]
        check_call(
            logits,
            target,
            reduction=reduction,
            p=self.p,
            weight=weight,
            class_weight=class_weight,
            avg_factor=avg_factor,
        )
        if ignore_index is None:
            ignore_index = self.ignore_index
        elif isinstance(ignore_index, bool) or not isinstance(ignore_index, numbers.Integral):
            raise TypeError(f"ignore_index must be an int or None, got {ignore_index!r}")
        else:
            ignore_index = int(ignore_index)
        margin = self._margin_for_forward(logits, target, ignore_index)
        check_finite = self.check_finite
        opts = LossOptions(
            ignore_index=ignore_index,
            reduction=reduction,
            p=self.p,
            weight=weight,
            class_weight=class_weight,
            avg_factor=avg_factor,
            mask_value=self.mask_value,
            check_finite=check_finite,
            divisor=self._divisor,
        )
        if weight is None and not isinstance(avg_factor, torch.Tensor):
            return hem(logits, target, margin, opts, [])
        inputs = value_inputs(logits, check_finite, 0.0, weight, None, avg_factor)
        return hem(logits, target, margin, opts, inputs)

    def extra_repr(self) -> str:
        return (
            f"margins={self.margins.tolist()}, scale={self.scale}, reduction={self.reduction!r}, "
            f"p={self.p}, ignore_index={self.ignore_index}"
            + ("" if self._divisor[0] == "kept" else f", divisor={self.divisor!r}")
        )


class HEMLoss(_MarginLossBase):
    r"""HEM loss with one margin for every sample: see :func:`hem_plugins.hem_loss`.

    Args:
        margin: the margin ``mu``. Leave it ``None`` to have it set from the
            training-set size with :meth:`set_num_samples` (the Avalanche plugin
            and the mmseg hook do this), ``mu = sqrt(scale / n_train)``. Until
            then the loss uses :data:`~hem_plugins.margins.FALLBACK_MARGIN` (1.0)
            and warns once.
        scale: the constant of :func:`~hem_plugins.margin_for_dataset`.
        ignore_index, reduction, p, check_finite, divisor: as in
            :func:`~hem_plugins.hem_loss` (``divisor``: ``"kept"``, ``"rows"``,
            ``"floor"`` or ``("floor", f)``; ``docs/divisor.md``).
        mask_value: as in :func:`~hem_plugins.hem_loss`; by default
            :data:`AVALANCHE_MASK_VALUE` (-1000), so that the masked units of an
            Avalanche ``IncrementalClassifier`` do not change the threshold.
        class_weight: ``(C,)`` per-class weights, or None.

    Shape:
        logits ``(N, C)`` or ``(N, C, d1, ...)``; target ``(N,)`` or ``(N, d1, ...)``.

    Example:
        >>> import torch
        >>> crit = HEMLoss()
        >>> crit.set_num_samples(50_000)
        >>> round(float(crit.margins), 3)
        0.2
        >>> loss = crit(torch.randn(4, 10, requires_grad=True), torch.tensor([1, 0, 9, 3]))
        >>> loss.backward()
    """

    def __init__(
        self,
        margin: float | None = None,
        *,
        scale: float = DEFAULT_SCALE,
        ignore_index: int = -100,
        reduction: str = "mean",
        p: int = 1,
        class_weight: Sequence[float] | torch.Tensor | None = None,
        mask_value: float | None = AVALANCHE_MASK_VALUE,
        check_finite: bool = True,
        divisor: str | tuple[str, float] = "kept",
    ) -> None:
        super().__init__(
            scale=scale,
            ignore_index=ignore_index,
            reduction=reduction,
            p=p,
            class_weight=class_weight,
            mask_value=mask_value,
            check_finite=check_finite,
            divisor=divisor,
        )
        self.register_buffer("margin", torch.tensor(FALLBACK_MARGIN, dtype=torch.float32))
        self.register_buffer("margin_is_set", torch.tensor(False))
        self._margin_value, self._margin_known = FALLBACK_MARGIN, False  # mirrors of the buffers
        if margin is not None:
            self.set_margin(margin)

    @property
    def margins(self) -> torch.Tensor:
        """The margin in use (a 0-dim tensor)."""
        return self.margin

    def set_margin(self, margin: float) -> None:
        """Fix the margin by hand."""
        margin = float(margin)
        if not math.isfinite(margin) or margin < 0:
            raise ValueError(f"margin must be a non-negative finite number, got {margin}")
        self.margin.fill_(margin)
        self.margin_is_set.fill_(True)
        self._margin_value, self._margin_known = float(self.margin), True

    def set_num_samples(self, n: int | float) -> None:
        """Set the margin from the number of training samples: ``sqrt(scale / n)``."""
        self.set_margin(margin_for_dataset(n, self.scale))
        self.num_samples.fill_(float(n))

    def _refresh_mirrors(self) -> None:
        self._margin_value, self._margin_known = float(self.margin), bool(self.margin_is_set)

    def _unchecked_margin(self) -> float | None:
        return self._margin_value if self._margin_known else None

    def _margin_for_forward(
        self, logits: torch.Tensor, target: torch.Tensor, ignore_index: int
    ) -> float | torch.Tensor:
        if not self._margin_known:
            self._warn_once(
                f"HEMLoss has no margin yet: using the fallback margin {FALLBACK_MARGIN}. "
                "Pass margin=..., or call set_num_samples(n_train) (the Avalanche plugin "
                "and the mmseg HEMMarginHook do)."
            )
        return self._margin_value


class HEMPlusLoss(_MarginLossBase):
    r"""HEM+ loss: a margin per class from the class frequencies of the training data.

    ``mu[c] = sqrt(scale / (n * s[c]))`` (:func:`~hem_plugins.class_margins`),
    ``s[c]`` the number of training samples of class ``c`` and ``n`` the
    number of classes present; each row uses the margin of its target class.

    Where the counts come from:

    * ``class_counts`` given (or :meth:`set_class_counts` called): fixed
      counts. With ``num_samples`` the counts are taken as frequencies and
      rescaled to ``num_samples`` sample-equivalents (segmentation: pixel
      counts and the number of images, ``s[c] = n_images * pixels[c] / pixels``).
    * otherwise, *online*: in training mode each forward adds the valid
      targets it sees to running counts (all-reduced across ranks when
      ``torch.distributed`` is initialised, so every rank has the same
      margins) and the margins follow the running frequencies, rescaled to
      ``num_samples`` (:meth:`set_num_samples`), or to the fallback margin
      1.0 for balanced classes while the number of samples is unknown. The
      loss warns once.

    Args:
        class_counts: ``(C,)`` non-negative counts, or None for online estimation.
        num_samples: number of training samples (images for segmentation).
        margin_rule: None (default: the margins above, unchanged), or a rule that
            adapts them during training: ``"error"``, ``dict(type="scheduled",
            warmup_steps=...)``, ... (:func:`~hem_plugins.adaptive_margins.build_margin_rule`;
            ``docs/adaptive_margins.md``). The loss then uses ``margins * factor``.
        scale, ignore_index, reduction, p, class_weight, mask_value,
            check_finite, divisor: as in :class:`HEMLoss`.

    Example:
        >>> import torch
        >>> crit = HEMPlusLoss(class_counts=[900, 100])
        >>> crit.margins  # the rare class gets the larger margin
        tensor([1.0541, 3.1623])
        >>> loss = crit(torch.randn(4, 2, requires_grad=True), torch.tensor([0, 0, 0, 1]))
    """

    def __init__(
        self,
        class_counts: Sequence[float] | torch.Tensor | None = None,
        *,
        num_samples: float | None = None,
        scale: float = DEFAULT_SCALE,
        ignore_index: int = -100,
        reduction: str = "mean",
        p: int = 1,
        class_weight: Sequence[float] | torch.Tensor | None = None,
        mask_value: float | None = AVALANCHE_MASK_VALUE,
        check_finite: bool = True,
        margin_rule: str | dict | MarginRule | None = None,
        divisor: str | tuple[str, float] = "kept",
    ) -> None:
        super().__init__(
            scale=scale,
            ignore_index=ignore_index,
            reduction=reduction,
            p=p,
            class_weight=class_weight,
            mask_value=mask_value,
            check_finite=check_finite,
            divisor=divisor,
        )
        # A submodule only when given: without a rule the state_dict holds HEM+'s buffers alone.
        self.margin_rule = build_margin_rule(margin_rule)
        self.register_buffer("class_counts", torch.zeros(0, dtype=torch.float64))
        self.register_buffer("margin", torch.zeros(0, dtype=torch.float32))
        self.register_buffer("online", torch.tensor(class_counts is None))
        # Python mirrors of the buffers the forward reads (no synchronisation per call).
        self._online, self._num_samples = class_counts is None, 0.0
        if num_samples is not None:
            self.set_num_samples(num_samples)
        if class_counts is not None:
            self.set_class_counts(class_counts)

    @property
    def margins(self) -> torch.Tensor:
        """The per-class margins in use, ``(C,)`` (empty before any counts are known).

        Online, they follow the counts of the last training forward (the
        fallback margin for every class while no label has been seen). With a
        ``margin_rule``, the frequency margins times the rule's current factors.
        """
        rule = self._modules.get("margin_rule")
        if rule is None or self.margin.numel() == 0:
            return self.margin
        return rule(self.margin, self.margin.numel())

    def set_class_counts(
        self, counts: Sequence[float] | torch.Tensor, num_samples: float | None = None
    ) -> None:
        """Fix the class counts (``(C,)``; and, optionally, the number of samples) and
        recompute the margins."""
        counts_t = torch.as_tensor(counts, dtype=torch.float64).detach().cpu()
        class_margins(counts_t, self.scale)  # validates: 1-D, finite, non-negative, not all zero
        if num_samples is not None:
            margin_for_dataset(num_samples)  # validates
            self.num_samples.fill_(float(num_samples))
            self._num_samples = float(num_samples)
        self.online.fill_(False)
        self._online = False
        self._set_counts(counts_t)

    def set_num_samples(self, n: int | float) -> None:
        """Set the number of training samples the counts are rescaled to."""
        margin_for_dataset(n, self.scale)  # validates
        self.num_samples.fill_(float(n))
        self._num_samples = float(n)
        if self.class_counts.numel():
            self._set_counts(self.class_counts.cpu())

    def _refresh_mirrors(self) -> None:
        self._online, self._num_samples = bool(self.online), float(self.num_samples)

    def _equivalents_scale(self) -> float | None:
        """Sample-equivalents per unit of count frequency: ``num_samples``, or, online with
        no dataset size, the frequencies that give balanced classes the fallback margin
        (``sqrt(scale / n_eq) = FALLBACK_MARGIN``); None: the counts are used as they are."""
        if self._num_samples > 0:
            return self._num_samples
        if self._online:
            return self.scale / FALLBACK_MARGIN**2
        return None

    def _set_counts(self, counts: torch.Tensor) -> None:
        """Store ``counts`` (a CPU tensor) and their margins (:func:`class_margins`)."""
        device = self.margin.device
        self.class_counts = counts.to(device=device, dtype=torch.float64)
        if not bool((counts > 0).any()):
            return  # online, no label seen yet: margins follow once one is
        k = self._equivalents_scale()
        equivalents = counts if k is None else counts * (k / counts.sum())
        self.margin = class_margins(equivalents, self.scale).to(device)

    def _online_margins(self, counts: torch.Tensor) -> torch.Tensor:
        """:func:`class_margins` of the online counts, in a few ops on their device.

        ``mu[c] = sqrt(scale * total / (n_present * k * counts[c]))`` with ``k``
        from :meth:`_equivalents_scale`; an absent class gets the largest margin
        of the present ones, and every class the fallback margin while no
        label has been seen.
        """
        present = counts > 0
        total = counts.sum()
        smallest = counts.masked_fill(~present, float("inf")).amin()
        factor = total * (self.scale / self._equivalents_scale()) / present.sum()
        mu = factor.div(torch.where(present, counts, smallest)).sqrt_()
        return torch.where(total > 0, mu, FALLBACK_MARGIN).float()

    def _margin_for_forward(
        self, logits: torch.Tensor, target: torch.Tensor, ignore_index: int
    ) -> float | torch.Tensor:
        num_classes = logits.shape[1]
        if not self._modules:  # no margin rule (its only submodule)
            return self._frequency_margin(target, num_classes, ignore_index)
        rule = self._modules.get("margin_rule")
        if rule is None:
            return self._frequency_margin(target, num_classes, ignore_index)
        if self.training and torch.is_grad_enabled():
            rule.observe(logits, target, ignore_index)
        return rule(self._frequency_margin(target, num_classes, ignore_index), num_classes)

    def _unchecked_margin(self) -> torch.Tensor | None:
        if self._online or self._modules:  # counts from the targets, or a margin rule
            return None
        return self._buffers["margin"]

    def _frequency_margin(
        self, target: torch.Tensor, num_classes: int, ignore_index: int
    ) -> float | torch.Tensor:
        buffers = self._buffers  # read directly: Module.__getattr__ costs a lookup per call
        known = buffers["class_counts"].numel()
        if self._online and 0 < known < num_classes:
            # A growing head (e.g. Avalanche's IncrementalClassifier): new classes
            # start with no count.
            self.class_counts = torch.cat(
                [self.class_counts, self.class_counts.new_zeros(num_classes - known)]
            )
            self.margin = self._online_margins(self.class_counts)
            known = num_classes
        if known and known != num_classes:
            raise ValueError(
                f"HEMPlusLoss has counts for {known} classes but the logits have C={num_classes}"
            )
        if not self._online:
            return buffers["margin"]
        if self.training and torch.is_grad_enabled():
            self._count_online(target, num_classes, ignore_index)
        elif not known:
            self._warn_once(
                "HEMPlusLoss has no class counts and has seen no labels: using the "
                f"fallback margin {FALLBACK_MARGIN} for every class."
            )
            return FALLBACK_MARGIN
        return buffers["margin"]

    def _count_online(self, target: torch.Tensor, num_classes: int, ignore_index: int) -> None:
        """Add the valid targets of this batch to the counts and update the margins.

        On the counts' device, with no synchronisation: on the CPU one call of the
        compiled kernel; otherwise torch ops, where an out-of-range or ignored
        target goes to an overflow bin that is dropped.
        """
        if not self._warned:
            self._warn_once(
                "HEMPlusLoss has no class counts: estimating class frequencies online from the "
                "targets it sees. Give class_counts (or use the Avalanche plugin / mmseg "
                "HEMMarginHook) for margins from the whole training set."
            )
        buffers = self._buffers
        dist = torch.distributed
        distributed = dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1
        if not distributed and not registered_op.compiling():  # the kernel is not traceable
            counts = buffers["class_counts"]
            if counts.numel() == 0:
                counts = buffers["class_counts"] = torch.zeros(
                    num_classes, dtype=torch.float64, device=buffers["margin"].device
                )
            # A new margins tensor each step (a caller may hold the last one); counts in place.
            margins = count_online(
                target,
                num_classes,
                ignore_index,
                counts,
                self.scale / self._equivalents_scale(),
                FALLBACK_MARGIN,
            )
            if margins is not None:
                buffers["margin"] = margins
                return
        with torch.no_grad():
            self._count_online_torch(target, num_classes, ignore_index, distributed)

    def _count_online_torch(
        self, target: torch.Tensor, num_classes: int, ignore_index: int, distributed
    ) -> None:
        """:meth:`_count_online` in torch ops (CUDA, a process group, or no kernel)."""
        dist = torch.distributed
        t = target.reshape(-1)
        bins = t.clamp(-1, num_classes)  # -1 and C: out of range
        if 0 <= ignore_index < num_classes:
            bins = bins.masked_fill(t == ignore_index, -1)
        bins = bins.add_(1)
        batch = torch.zeros(num_classes + 2, dtype=torch.float64, device=t.device)
        ones = torch.ones((), dtype=batch.dtype, device=t.device).expand(t.numel())
        batch.scatter_add_(0, bins, ones)  # deterministic on CUDA for 1-D input
        batch = batch[1:-1]
        if distributed:
            batch = batch.contiguous()
            dist.all_reduce(batch)
        counts = self.class_counts
        if counts.numel():
            counts = counts.to(batch.device).add_(batch)
        else:
            counts = batch.to(self.margin.device)
        self._buffers["class_counts"] = counts
        self._buffers["margin"] = self._online_margins(counts)

    def _num_classes(self) -> tuple[str, int] | None:
        """Fixed counts say the number of classes (online ones follow the head), else the
        class weights do."""
        if not self._online and self.class_counts.numel():
            return "class_counts", self.class_counts.numel()
        return super()._num_classes()

    def _take_shapes(self, state_dict, prefix: str) -> None:
        # Counts and margins have the size of the checkpoint's class set, which a
        # freshly built loss (no counts yet) does not know: take its shape.
        for name in ("class_counts", "margin"):
            key = prefix + name
            if key in state_dict:
                setattr(self, name, torch.empty_like(state_dict[key], device=self.margin.device))
