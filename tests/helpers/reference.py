"""A deliberately slow and obvious HEM / MM written from docs/design.md section 1
(and, for HEM's ``divisor``, docs/divisor.md).

Loops over rows and classes in float64 with no vectorisation; autograd
through it (with the threshold and the kept set as constants) gives the
reference gradient.
"""

from __future__ import annotations

import torch


def _rows(logits, target, weight, class_weight):
    c = logits.shape[1]
    x = logits.double().movedim(1, -1).reshape(-1, c)
    t = target.reshape(-1).tolist()
    w = None if weight is None else weight.double().reshape(-1).tolist()
    return x, t, w, c


def reference_errors(logits, target, margin, ignore_index, p, weight, class_weight):
    """List of (row, valid, [errors as 0-dim tensors]) following the text of section 2."""
    x, t, w, c = _rows(logits, target, weight, class_weight)
    out = []
    for j in range(x.shape[0]):
        tj = t[j]
        if tj == ignore_index:
            out.append((j, False, None))
            continue
        wj = 1.0
        if w is not None:
            wj *= w[j]
        if class_weight is not None:
            wj *= float(class_weight[tj])
        if wj == 0:
            out.append((j, False, None))
            continue
        if isinstance(margin, torch.Tensor) and margin.dim() == 1:
            mu = float(margin[tj])
        else:
            mu = float(margin)
        errs = []
        for i in range(c):
            if i == tj:
                errs.append(x.new_zeros(()))
                continue
            e = torch.clamp(mu - x[j, tj] + x[j, i], min=0.0)
            if p == 2:
                e = e * e
            errs.append(e * wj)
        out.append((j, True, errs))
    return out, x


def reference_hem(
    logits,
    target,
    margin,
    *,
    ignore_index=-100,
    reduction="mean",
    p=1,
    weight=None,
    class_weight=None,
    avg_factor=None,
    mask_value=None,
    divisor="kept",
):
    rows, x = reference_errors(logits, target, margin, ignore_index, p, weight, class_weight)
    c = x.shape[1]
    total = 0.0
    count = 0
    for j, valid, errs in rows:
        if not valid:
            continue
        for i in range(c):
            total += float(errs[i].detach())
            xv = float(x[j, i].detach())
            masked = mask_value is not None and (xv == mask_value or xv == float("-inf"))
            count += 0 if masked else 1
    ebar = total / count if count else 0.0
    kept_sum = x.new_zeros(())
    n_kept = 0
    per_row = []
    for _, valid, errs in rows:
        row = x.new_zeros(())
        if valid:
            for i in range(c):
                if float(errs[i].detach()) > ebar:
                    row = row + errs[i]
                    n_kept += 1
        per_row.append(row)
        kept_sum = kept_sum + row
    if reduction == "none":
        return torch.stack(per_row).reshape(target.shape)
    if reduction == "sum":
        return kept_sum
    if avg_factor is not None:
        return kept_sum / float(avg_factor)
    n_valid = sum(1 for _, valid, _ in rows if valid)
    if divisor == "kept":
        d = n_kept
    elif divisor == "rows":
        d = n_valid
    else:  # "floor" or ("floor", f)
        from hem_plugins.functional import DIVISOR_FLOOR

        f = DIVISOR_FLOOR if divisor == "floor" else divisor[1]
        d = max(n_kept, f * n_valid)
    return kept_sum / max(d, 1)


def reference_mm(
    logits,
    target,
    margin=1.0,
    *,
    ignore_index=-100,
    reduction="mean",
    p=1,
    weight=None,
    class_weight=None,
    avg_factor=None,
):
    rows, x = reference_errors(logits, target, margin, ignore_index, p, weight, class_weight)
    c = x.shape[1]
    per_row = [sum(errs) / c if valid else x.new_zeros(()) for _, valid, errs in rows]
    n_valid = sum(1 for _, valid, _ in rows if valid)
    if reduction == "none":
        return torch.stack(per_row).reshape(target.shape)
    total = torch.stack(per_row).sum()
    if reduction == "sum":
        return total
    return total / (float(avg_factor) if avg_factor is not None else max(n_valid, 1))
