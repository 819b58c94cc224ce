"""The 3e rivals' configs: CE with mmseg's OHEMPixelSampler, and mmseg's FocalLoss.

Both build through mmseg's registry and train a few iterations with mmengine's Runner on
the carved training part, beside the auxiliary head; the trained model is evaluated on
the test images.
"""

from __future__ import annotations

import pytest
import torch
from helpers.seg import CONFIGS

from hem_plugins.benchmark.mmseg.runner import evaluate, fit
from hem_plugins.benchmark.tasks.seg_runs import (
    carve_options,
    loader_test_images,
    schedule_options,
)


def _model(name: str):
    from mmengine.config import Config
    from mmseg.registry import MODELS

    cfg = Config.fromfile(str(CONFIGS / f"fcn-r18tiny_digitmosaic_{name}.py"))
    return MODELS.build(cfg.model)


def test_ohem_sampler_sits_on_the_decode_head_and_keeps_the_hardest_pixels():
    model = _model("ohem")
    sampler = model.decode_head.sampler
    assert type(sampler).__name__ == "OHEMPixelSampler"
    assert (sampler.thresh, sampler.min_kept) == (0.7, 800)
    assert model.auxiliary_head.sampler is None  # mmseg's OHEM recipes: decode head only
    label = torch.randint(0, 11, (2, 1, 64, 64))
    # Right everywhere with distinct confidences p > 0.7: only the min_kept hardest pixels.
    onehot = torch.nn.functional.one_hot(label[:, 0], 11).permute(0, 3, 1, 2).float()
    logits = onehot * (4.0 + 4.0 * torch.rand(2, 1, 64, 64))
    weight = sampler.sample(logits, label)
    assert int(weight.sum()) == 2 * 800
    # Wrong everywhere: every pixel is hard.
    assert int(sampler.sample(-logits, label).sum()) == 2 * 64 * 64


def test_focal_config_uses_mmseg_sigmoid_focal_loss_on_both_heads():
    from mmseg.models.losses import FocalLoss

    model = _model("focal")
    for head, weight in ((model.decode_head, 1.0), (model.auxiliary_head, 0.4)):
        loss = head.loss_decode
        assert isinstance(loss, FocalLoss) and type(loss).__name__ == "OneHotFocalLoss"
        assert loss.use_sigmoid and (loss.gamma, loss.alpha) == (2.0, 0.5)
        assert loss.loss_weight == weight and loss.loss_name == "loss_focal"


def test_one_hot_focal_loss_is_the_sigmoid_focal_formula_and_skips_ignored_pixels():
    from mmseg.registry import MODELS

    loss = MODELS.build(dict(type="OneHotFocalLoss", use_sigmoid=True, gamma=2.0, alpha=0.25))
    pred = torch.randn(2, 5, 6, 7, requires_grad=True)
    label = torch.randint(0, 5, (2, 6, 7))
    label[0, :2] = 255
    valid = (label != 255).float()
    t = torch.nn.functional.one_hot(label.clamp(max=4), 5).permute(0, 3, 1, 2).float()
    p = pred.sigmoid()
    focal = (0.25 * t + 0.75 * (1 - t)) * ((1 - p) * t + p * (1 - t)) ** 2
    bce = torch.nn.functional.binary_cross_entropy_with_logits(pred, t, reduction="none")
    ref = (bce * focal * valid[:, None]).sum() / pred.numel()  # mmseg's 'mean': over N*C
    out = loss(pred, label, ignore_index=255)
    torch.testing.assert_close(out, ref)
    out.backward()
    assert pred.grad[0, :, :2].abs().sum() == 0  # ignored pixels give no gradient


@pytest.mark.slow
@pytest.mark.parametrize(("name", "loss_key"), [("ohem", "loss_ce"), ("focal", "loss_focal")])
def test_rival_config_trains_with_the_runner_and_evaluates(tmp_path, name, loss_key):
    opts = {**schedule_options(2, 0, 0.05), **carve_options(0.2, 0),
            "train_dataloader.batch_size": 2, "experiment_name": f"rival_{name}"}  # fmt: skip
    runner, val = fit(str(CONFIGS / f"fcn-r18tiny_digitmosaic_{name}.py"), str(tmp_path), opts)
    scalars = runner.message_hub.log_scalars
    for head in ("decode", "aux"):  # both heads trained with the config's loss
        assert torch.isfinite(torch.tensor(scalars[f"train/{head}.{loss_key}"].current()))
    assert len(runner.train_dataloader.dataset) == 320
    assert len(runner.val_dataloader.dataset) == 80  # the validation split, not the test images
    assert 0.0 <= val["mIoU"] <= 100.0
    test = evaluate(runner, loader_test_images(runner.cfg))
    assert {"mIoU", "mAcc", "aAcc"} <= set(test) and 0.0 <= test["aAcc"] <= 100.0
