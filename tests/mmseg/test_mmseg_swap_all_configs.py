"""The one-line swap over every decode and auxiliary head config that mmseg ships.

Every ``CrossEntropyLoss`` dict found in a head of a shipped config, merged
with ``type='HEMPlusLoss'`` (or ``'HEMLoss'``) as a child config's one line
would merge it, builds through mmseg's registry with its other keys honoured;
``use_sigmoid=True`` fails with a message that names it.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import mmseg
import pytest
import torch
from mmengine.config import Config

CONFIGS = Path(mmseg.__file__).parent / ".mim" / "configs"


def _ce_losses(model_cfg: dict):
    for key in ("decode_head", "auxiliary_head"):
        heads = model_cfg.get(key) or []
        for head in heads if isinstance(heads, list) else [heads]:
            losses = head.get("loss_decode") or []
            for loss in losses if isinstance(losses, list) else [losses]:
                if isinstance(loss, dict) and loss.get("type") == "CrossEntropyLoss":
                    yield loss


@pytest.mark.slow
def test_one_line_swap_over_every_shipped_config():
    from mmseg.registry import MODELS

    files = sorted(p for p in CONFIGS.rglob("*.py") if "_base_" not in p.parts)
    assert len(files) > 500, f"expected mmseg's shipped configs under {CONFIGS}"
    swapped = sigmoid_refused = 0
    seen = set()
    for i, path in enumerate(files):
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                model = Config.fromfile(str(path)).to_dict().get("model", {})
        except Exception:  # a few shipped configs need optional packages to parse
            continue
        for loss in _ce_losses(model):
            key = repr(sorted(loss.items()))
            if key in seen:
                continue
            seen.add(key)
            kind = ("HEMPlusLoss", "HEMLoss")[i % 2]
            cfg = dict(loss, type=kind)
            if loss.get("use_sigmoid"):
                with pytest.raises(ValueError, match="use_sigmoid"):
                    MODELS.build(cfg)
                sigmoid_refused += 1
                continue
            built = MODELS.build(cfg)
            assert type(built).__name__ == kind, path
            assert built.loss_weight == pytest.approx(loss.get("loss_weight", 1.0)), path
            if "loss_name" in loss:
                assert built.loss_name == loss["loss_name"], path
            if loss.get("class_weight") is not None:
                torch.testing.assert_close(
                    built.class_weight, torch.tensor(loss["class_weight"], dtype=torch.float32)
                )
            swapped += 1
    assert swapped >= 5 and sigmoid_refused >= 1, (swapped, sigmoid_refused)
