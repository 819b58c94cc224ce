"""The registered mmseg losses follow mmseg's conventions and compute exactly the core loss."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from helpers.seg import DIGIT_CONFIG, REAL_CONFIGS
from mmengine.config import Config

from hem_plugins import class_margins, hem_loss, margin_for_dataset


def build(cfg: dict):
    from mmseg.registry import MODELS

    return MODELS.build(cfg)


def seg_batch(n=2, c=5, h=6, w=7, seed=0):
    g = torch.Generator().manual_seed(seed)
    logits = torch.randn(n, c, h, w, generator=g, requires_grad=True)
    label = torch.randint(0, c, (n, h, w), generator=g)
    label[0, :2] = 255
    return logits, label


def test_registered_under_the_issue_names():
    from mmseg.registry import MODELS

    import hem_plugins.mmseg as adapter

    assert MODELS.get("HEMLoss") is adapter.HEMLoss
    assert MODELS.get("HEMPlusLoss") is adapter.HEMPlusLoss
    assert build(dict(type="HEMLoss")).loss_name == "loss_hem"
    assert build(dict(type="HEMPlusLoss")).loss_name == "loss_hem_plus"


@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
def test_hem_equals_core_with_mmseg_arguments(reduction):
    x, t = seg_batch()
    weight = torch.rand(t.shape)
    cw = [1.0, 2.0, 0.5, 1.0, 3.0]
    loss = build(dict(type="HEMLoss", margin=0.7, class_weight=cw, loss_weight=0.4))
    got = loss(x, t, weight=weight, ignore_index=255, reduction_override=reduction)
    want = 0.4 * hem_loss(
        x,
        t,
        0.7,
        ignore_index=255,
        weight=weight,
        class_weight=torch.tensor(cw),
        reduction=reduction,
    )
    torch.testing.assert_close(got, want)
    (gx,) = torch.autograd.grad(got.sum(), x)
    (wx,) = torch.autograd.grad(want.sum(), x)
    torch.testing.assert_close(gx, wx)


def test_hem_plus_margins_are_image_equivalent_pixel_counts():
    pixels = [9000.0, 600.0, 300.0, 100.0, 0.0]
    loss = build(dict(type="HEMPlusLoss", class_counts=pixels, num_images=50))
    equivalents = torch.tensor(pixels, dtype=torch.float64) * 50 / sum(pixels)
    torch.testing.assert_close(loss.margins, class_margins(equivalents))
    x, t = seg_batch()
    got = loss(x, t, avg_factor=17.0, ignore_index=255)
    want = hem_loss(x, t, class_margins(equivalents), ignore_index=255, avg_factor=17.0)
    torch.testing.assert_close(got, want)


def test_hem_margin_from_num_images():
    loss = build(dict(type="HEMLoss", num_images=2975))
    assert float(loss.margins) == pytest.approx(margin_for_dataset(2975))


def test_ignore_index_is_the_heads():
    x, t = seg_batch()
    t2 = t.clone()
    t2[t2 == 255] = 4  # other value as ignore_index
    loss = build(dict(type="HEMLoss", margin=1.0))
    torch.testing.assert_close(
        loss(x, t, ignore_index=255),
        hem_loss(x, t, 1.0, ignore_index=255),
    )
    torch.testing.assert_close(loss(x, t2, ignore_index=4), hem_loss(x, t2, 1.0, ignore_index=4))
    assert loss.ignore_index == 255  # the call's ignore_index is not written into the module


def test_online_counts_skip_the_calls_ignore_index():
    """HEM+ online counting takes the ignore_index of the call, not a stale module attribute."""
    loss = build(dict(type="HEMPlusLoss"))
    loss.train()
    x = torch.randn(1, 5, 2, 2)
    t = torch.tensor([[[4, 4], [1, 2]]])
    with pytest.warns(UserWarning, match="online"):
        loss(x, t, ignore_index=4)
    assert loss.class_counts.tolist() == [0.0, 1.0, 1.0, 0.0, 0.0]
    assert loss.ignore_index == 255


def test_avg_non_ignore_changes_nothing():
    x, t = seg_batch()
    a = build(dict(type="HEMLoss", margin=1.0, avg_non_ignore=False))(x, t)
    b = build(dict(type="HEMLoss", margin=1.0, avg_non_ignore=True))(x, t)
    torch.testing.assert_close(a, b)


def test_class_weight_from_files(tmp_path):
    cw = [1.0, 2.0, 0.5, 1.0, 3.0]
    np.save(tmp_path / "w.npy", np.array(cw))
    (tmp_path / "w.json").write_text(json.dumps(cw))
    x, t = seg_batch()
    want = build(dict(type="HEMLoss", margin=1.0, class_weight=cw))(x, t)
    for f in ("w.npy", "w.json"):
        loss = build(dict(type="HEMPlusLoss", class_weight=str(tmp_path / f)))
        torch.testing.assert_close(loss.class_weight, torch.tensor(cw))
        got = build(dict(type="HEMLoss", margin=1.0, class_weight=str(tmp_path / f)))(x, t)
        torch.testing.assert_close(got, want)


def test_online_counts_warn_once_and_follow_the_labels():
    loss = build(dict(type="HEMPlusLoss"))
    x, t = seg_batch()
    with pytest.warns(UserWarning, match="online"):
        loss(x, t)
    valid = t[t != 255]
    torch.testing.assert_close(loss.class_counts, torch.bincount(valid, minlength=5).double())
    state = {k: v.clone() for k, v in loss.state_dict().items()}
    fresh = build(dict(type="HEMPlusLoss"))
    fresh.load_state_dict(state)
    torch.testing.assert_close(fresh.margins, loss.margins)
    torch.testing.assert_close(fresh.class_counts, loss.class_counts)


def test_ohem_sampler_weights_reach_the_core():
    """A real FCN head with OHEMPixelSampler: the loss gets its pixel weights."""
    from mmengine.structures import PixelData
    from mmseg.registry import MODELS
    from mmseg.structures import SegDataSample

    head = MODELS.build(
        dict(
            type="FCNHead",
            in_channels=8,
            channels=8,
            num_convs=1,
            num_classes=5,
            dropout_ratio=0.0,
            sampler=dict(type="OHEMPixelSampler", thresh=0.7, min_kept=20),
            loss_decode=dict(type="HEMPlusLoss", class_counts=[5, 4, 3, 2, 1], num_images=3),
        )
    )
    feats = [torch.randn(2, 8, 6, 7)]
    samples = []
    for i in range(2):
        s = SegDataSample()
        s.gt_sem_seg = PixelData(data=seg_batch()[1][i : i + 1])
        samples.append(s)
    losses = head.loss(feats, samples, train_cfg={})
    logits = head.forward(feats)
    label = torch.stack([s.gt_sem_seg.data for s in samples])
    weight = head.sampler.sample(logits, label)
    want = hem_loss(
        logits, label.squeeze(1), head.loss_decode.margins, ignore_index=255, weight=weight
    )
    assert 0 < int((weight > 0).sum()) < weight.numel()
    torch.testing.assert_close(losses["loss_hem_plus"], want)


# --- the one-line swap over shipped configs ---------------------------------------
SHIPPED = [
    "fcn/fcn_r50-d8_4xb2-80k_cityscapes-512x1024.py",
    "deeplabv3plus/deeplabv3plus_r50-d8_4xb2-80k_cityscapes-512x1024.py",
    "pspnet/pspnet_r18-d8_4xb2-80k_cityscapes-512x1024.py",
    "segformer/segformer_mit-b0_8xb2-160k_ade20k-512x512.py",
    "upernet/upernet_r50_4xb4-80k_ade20k-512x512.py",
    "bisenetv2/bisenetv2_fcn_4xb4-ohem-160k_cityscapes-1024x1024.py",
    "stdc/stdc1_4xb12-80k_cityscapes-512x1024.py",
]


def _heads(model_cfg):
    heads = []
    for key in ("decode_head", "auxiliary_head"):
        h = model_cfg.get(key)
        if h is None:
            continue
        heads.extend(h if isinstance(h, list) else [h])
    return heads


@pytest.mark.parametrize(
    "base, kind", [(b, ("HEMPlusLoss", "HEMLoss")[i % 2]) for i, b in enumerate(SHIPPED)]
)
def test_one_line_swap_over_shipped_configs(tmp_path, base, kind):
    child = tmp_path / "child.py"
    child.write_text(
        f"_base_ = ['mmseg::{base}']\n"
        f"model = dict(decode_head=dict(loss_decode=dict(type='{kind}')))\n"
    )
    cfg = Config.fromfile(str(child))
    head = cfg.model.decode_head
    head = head[-1] if isinstance(head, list) else head
    loss_cfg = head.loss_decode
    loss = build(loss_cfg)
    assert type(loss).__name__ == kind
    # Keys inherited from the base CrossEntropyLoss are honoured.
    assert loss.loss_weight == pytest.approx(loss_cfg.get("loss_weight", 1.0))
    if loss_cfg.get("class_weight") is not None:
        torch.testing.assert_close(loss.class_weight, torch.tensor(loss_cfg.class_weight))
    # And every auxiliary head swaps the same way.
    for aux in _heads(cfg.model)[1:]:
        aux_loss = aux.get("loss_decode")
        if isinstance(aux_loss, dict) and aux_loss.get("type") == "CrossEntropyLoss":
            build(dict(aux_loss, type=kind))


def test_swap_honours_class_weight_and_loss_name(tmp_path):
    cw = [1.0] * 18 + [2.0]
    child = tmp_path / "child.py"
    child.write_text(
        "_base_ = ['mmseg::fcn/fcn_r50-d8_4xb2-80k_cityscapes-512x1024.py']\n"
        f"model = dict(decode_head=dict(loss_decode=dict(type='CrossEntropyLoss', "
        f"class_weight={cw}, avg_non_ignore=True, loss_name='loss_seg')))\n"
    )
    child2 = tmp_path / "child2.py"
    child2.write_text(
        "_base_ = ['./child.py']\nmodel = dict(decode_head=dict(loss_decode=dict(type='HEMPlusLoss')))\n"
    )
    loss = build(Config.fromfile(str(child2)).model.decode_head.loss_decode)
    assert loss.loss_name == "loss_seg" and loss.avg_non_ignore
    torch.testing.assert_close(loss.class_weight, torch.tensor(cw))


def _bn(cfg):
    """SyncBN -> BN everywhere (the CPU has no process group)."""
    if isinstance(cfg, dict):
        if cfg.get("type") == "SyncBN":
            cfg["type"] = "BN"
        for v in cfg.values():
            _bn(v)
    elif isinstance(cfg, list):
        for v in cfg:
            _bn(v)
    return cfg


def _model_loss(model_cfg, n=1, size=64, num_classes=None):
    from mmengine.structures import PixelData
    from mmseg.registry import MODELS
    from mmseg.structures import SegDataSample

    model_cfg = _bn(model_cfg.to_dict() if hasattr(model_cfg, "to_dict") else dict(model_cfg))
    model_cfg.pop("pretrained", None)
    model_cfg.get("backbone", {}).pop("init_cfg", None)
    model = MODELS.build(model_cfg)
    model.train()
    inputs = torch.randn(n, 3, size, size)
    samples = []
    for _ in range(n):
        s = SegDataSample()
        s.gt_sem_seg = PixelData(data=torch.randint(0, num_classes, (1, size, size)))
        s.set_metainfo(dict(img_shape=(size, size), pad_shape=(size, size)))
        samples.append(s)
    return model, model.loss(inputs, samples)


@pytest.mark.parametrize("variant", ["ce", "hem", "hemplus", "dice", "ce_dice", "ohem", "focal"])
def test_digit_mosaic_configs_build_and_compute_loss(variant):
    cfg = Config.fromfile(str(DIGIT_CONFIG[variant]))
    assert cfg.custom_imports.imports == ["hem_plugins.benchmark.mmseg"]  # DigitMosaic, rivals
    model, losses = _model_loss(cfg.model, n=2, num_classes=11)
    names = {"ce": ["loss_ce"], "hem": ["loss_hem"], "hemplus": ["loss_hem_plus"],
             "dice": ["loss_dice"], "ce_dice": ["loss_ce", "loss_dice"], "ohem": ["loss_ce"],
             "focal": ["loss_focal"]}  # fmt: skip
    for name in names[variant]:
        key = f"decode.{name}"
        assert key in losses and f"aux.{name}" in losses, sorted(losses)
        assert torch.isfinite(losses[key])
    sum(v for k, v in losses.items() if "loss" in k).backward()


@pytest.mark.slow
@pytest.mark.parametrize("path", REAL_CONFIGS, ids=lambda p: p.name)
def test_real_dataset_configs_build_and_compute_loss(path):
    cfg = Config.fromfile(str(path))
    assert cfg.custom_imports.imports == ["hem_plugins.mmseg"]  # the adapter alone
    assert {"type": "HEMMarginHook"} in [dict(h) for h in cfg.custom_hooks]
    for head in _heads(cfg.model):
        assert head.loss_decode.type == "HEMPlusLoss"
    num_classes = _heads(cfg.model)[0].num_classes
    cfg.model.data_preprocessor.size = (64, 64)
    model, losses = _model_loss(cfg.model, n=2, num_classes=num_classes)
    assert torch.isfinite(losses["decode.loss_hem_plus"])


# --- divisor= (docs/divisor.md) --------------------------------------------------------------
@pytest.mark.parametrize("kind", ["HEMLoss", "HEMPlusLoss"])
@pytest.mark.parametrize("divisor", ["rows", "floor", ("floor", 0.05), ["floor", 0.05]])
def test_divisor_config_key_reaches_the_core(kind, divisor):
    x, t = seg_batch()
    extra = (
        dict(margin=0.7) if kind == "HEMLoss" else dict(class_counts=[5, 4, 3, 2, 1], num_images=3)
    )
    loss = build(dict(type=kind, divisor=divisor, **extra))
    core_divisor = tuple(divisor) if isinstance(divisor, list) else divisor
    want = hem_loss(x, t, loss.margins, ignore_index=255, divisor=core_divisor)
    torch.testing.assert_close(loss(x, t, ignore_index=255), want)
    # avg_factor keeps its precedence: sum of the kept errors over avg_factor
    got = loss(x, t, ignore_index=255, avg_factor=11.0)
    torch.testing.assert_close(got, hem_loss(x, t, loss.margins, ignore_index=255, avg_factor=11.0))


def test_divisor_in_loss_decode_builds_through_the_registry():
    from mmseg.registry import MODELS

    head = MODELS.build(
        dict(
            type="FCNHead",
            in_channels=8,
            channels=8,
            num_convs=1,
            num_classes=5,
            loss_decode=dict(type="HEMLoss", divisor="rows", margin=0.5),
        )
    )
    assert head.loss_decode.divisor == "rows"
    with pytest.raises(ValueError, match="divisor must be one of"):
        build(dict(type="HEMLoss", divisor="pixels"))
    with pytest.raises(ValueError, match="finite f > 0"):
        build(dict(type="HEMPlusLoss", divisor=("floor", 0)))


@pytest.mark.parametrize("variant, divisor", [("hem_rows", "rows"), ("hem_floor", "floor")])
def test_digit_mosaic_divisor_configs_build_and_compute_loss(variant, divisor):
    path = DIGIT_CONFIG["hem"].parent / f"fcn-r18tiny_digitmosaic_{variant}.py"
    model, losses = _model_loss(Config.fromfile(str(path)).model, n=2, num_classes=11)
    assert model.decode_head.loss_decode.divisor == divisor
    assert model.auxiliary_head.loss_decode.divisor == divisor
    assert torch.isfinite(losses["decode.loss_hem"]) and torch.isfinite(losses["aux.loss_hem"])


# --- bf16 (docs/mmseg.md, "Mixed precision") ----------------------------------------------
def test_hem_plus_of_bf16_logits_is_float32_hem_plus_of_the_same_values():
    x, t = seg_batch(c=5)
    counts = [50, 40, 30, 20, 10]
    loss = build(dict(type="HEMPlusLoss", class_counts=counts, num_images=10))
    x16 = x.detach().to(torch.bfloat16).requires_grad_()
    got = loss(x16, t, ignore_index=255)
    assert got.dtype == torch.float32  # computed in float32 whatever the logits' dtype
    want = loss(x16.detach().float(), t, ignore_index=255)
    torch.testing.assert_close(got, want)
    got.backward()
    assert x16.grad.dtype == torch.bfloat16 and torch.isfinite(x16.grad.float()).all()


def test_bf16_cpu_autocast_of_the_digit_mosaic_model_follows_float32():
    cfg = Config.fromfile(str(DIGIT_CONFIG["hemplus"]))
    torch.manual_seed(0)
    model, ref = _model_loss(cfg.model, n=2, num_classes=11)
    torch.manual_seed(0)
    model16, _ = _model_loss(cfg.model, n=2, num_classes=11)
    model16.load_state_dict(model.state_dict())
    from mmengine.structures import PixelData
    from mmseg.structures import SegDataSample

    g = torch.Generator().manual_seed(1)
    inputs = torch.randn(2, 3, 64, 64, generator=g)
    samples = []
    for _ in range(2):
        s = SegDataSample()
        s.gt_sem_seg = PixelData(data=torch.randint(0, 11, (1, 64, 64), generator=g))
        s.set_metainfo(dict(img_shape=(64, 64), pad_shape=(64, 64)))
        samples.append(s)
    model.eval(), model16.eval()  # the same BN statistics on both sides
    want = model.loss(inputs, samples)["decode.loss_hem_plus"]
    with torch.autocast("cpu", dtype=torch.bfloat16):
        got = model16.loss(inputs, samples)["decode.loss_hem_plus"]
    assert got.dtype == torch.float32 and torch.isfinite(got)
    torch.testing.assert_close(got, want, rtol=0.05, atol=0.05)  # bf16's forward pass only
