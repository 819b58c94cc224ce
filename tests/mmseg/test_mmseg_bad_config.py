"""Bad loss configs fail with a message naming the problem (at build, in the hook or at the first forward)."""

from __future__ import annotations

import pytest
from helpers.seg import DIGIT_CONFIG
from mmengine.config import Config


def build(cfg):
    from mmseg.registry import MODELS

    return MODELS.build(cfg)


@pytest.mark.parametrize(
    "cfg, error, match",
    [
        (dict(type="HEMPlusLoss", class_count=[1, 2]), TypeError, "class_count"),
        (dict(type="HEMLoss", foo=1), TypeError, "foo"),
        (dict(type="HEMPlusLoss", class_counts=[1, 2, 3]), ValueError, "num_images"),
        (dict(type="HEMPlusLoss", class_counts="/nonexistent/c.json"), FileNotFoundError, "c.json"),
        (dict(type="HEMLoss", use_sigmoid=True), ValueError, "use_sigmoid"),
        (dict(type="HEMLoss", loss_name="hem"), ValueError, "loss_"),
        (dict(type="HEMLoss", margin=-1.0), ValueError, "margin"),
        (dict(type="HEMLoss", class_weight="/nonexistent/w.npy"), FileNotFoundError, "w.npy"),
        (dict(type="HEMPlusLoss", class_counts=[1, -2], num_images=3), ValueError, "negative"),
    ],
)
def test_bad_loss_config(cfg, error, match):
    with pytest.raises(error, match=match):
        build(cfg)


@pytest.mark.parametrize(
    "content", ["{not json", '{"counts": [1, 2]}', '{"counts": "x", "num_images": 3}']
)
def test_corrupt_counts_file(tmp_path, content):
    path = tmp_path / "counts.json"
    path.write_text(content)
    with pytest.raises(ValueError, match="counts.json"):
        build(dict(type="HEMPlusLoss", class_counts=str(path)))


def _wrong_length_cfg(key):
    cfg = Config.fromfile(str(DIGIT_CONFIG["hemplus"]))
    extra = {key: [1.0, 2.0, 3.0]}
    if key == "class_counts":
        extra["num_images"] = 10
    cfg.model.decode_head.loss_decode.update(extra)
    return cfg


@pytest.mark.parametrize("key", ["class_counts", "class_weight"])
def test_length_not_num_classes_fails_at_the_first_forward(key):
    """Without the hook, the loss checks its config against the logits' channels, naming the key."""
    import torch

    model = build(_wrong_length_cfg(key).model)  # mmseg gives a loss no num_classes: builds
    loss = model.decode_head.loss_decode
    logits, label = torch.randn(1, 11, 4, 4), torch.randint(0, 11, (1, 4, 4))
    with pytest.raises(
        ValueError, match=rf"loss_decode\.{key} has 3 entries but the head's num_classes is 11"
    ):
        loss(logits, label)


@pytest.mark.parametrize("key", ["class_counts", "class_weight"])
def test_length_not_num_classes_fails_in_the_hook_before_training(tmp_path, key):
    """HEMMarginHook checks every HEM loss against its head's num_classes before training."""
    from mmengine.runner import Runner

    from hem_plugins.benchmark.mmseg.runner import build_cfg
    from hem_plugins.mmseg import HEMMarginHook

    opts = {f"model.decode_head.loss_decode.{key}": [1.0, 2.0, 3.0], "custom_hooks": []}
    if key == "class_counts":
        opts["model.decode_head.loss_decode.num_images"] = 10
    runner = Runner.from_cfg(build_cfg(str(DIGIT_CONFIG["hemplus"]), str(tmp_path), opts))
    with pytest.raises(
        ValueError,
        match=rf"decode_head\.loss_decode\.{key} has 3 entries but decode_head\.num_classes is 11",
    ):
        HEMMarginHook(num_workers=0).before_train(runner)
