"""Bad loss configs fail when the model is built, with a message naming the problem."""

from __future__ import annotations

import pytest
from mmengine.config import Config
from seg_helpers import DIGIT_CONFIG


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


@pytest.mark.parametrize("key", ["class_counts", "class_weight"])
def test_length_not_num_classes_fails_at_model_build(key):
    cfg = Config.fromfile(str(DIGIT_CONFIG["hemplus"]))
    extra = {key: [1.0, 2.0, 3.0]}
    if key == "class_counts":
        extra["num_images"] = 10
    cfg.model.decode_head.loss_decode.update(extra)
    with pytest.raises(ValueError, match=rf"{key} has 3 entries .* num_classes=11"):
        build(cfg.model)
