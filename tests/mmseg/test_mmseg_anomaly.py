"""AnomalyMetric and the DigitMosaic anomaly variant: histogram metrics within their bounds of
scikit-learn's exact ones, ignore labels, mmengine's Evaluator with real SegDataSamples, bad
configs, and a 2-iteration run of the shipped config."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from helpers.seg import CONFIGS
from sklearn.metrics import average_precision_score, roc_auc_score, roc_curve

from hem_plugins.unknown import bin_index, histogram_metrics, unknownness

ANOMALY_CONFIG = CONFIGS / "fcn-r18tiny_digitmosaic_anomaly_hem.py"


def exact(u: np.ndarray, positive: np.ndarray) -> dict[str, float]:
    """AUROC, AP and FPR at the first ROC point with TPR >= 95 %, from scikit-learn."""
    fpr, tpr, _ = roc_curve(positive, u, drop_intermediate=False)
    return dict(AUROC=roc_auc_score(positive, u), AP=average_precision_score(positive, u),
                FPR95=float(fpr[np.searchsorted(tpr, 0.95, side="left")]))  # fmt: skip


def from_histograms(u: np.ndarray, positive: np.ndarray, low, high, num_bins) -> dict:
    idx, _ = bin_index(torch.from_numpy(u), low, high, num_bins)
    pos = torch.bincount(idx[torch.from_numpy(positive)], minlength=num_bins)
    neg = torch.bincount(idx[torch.from_numpy(~positive)], minlength=num_bins)
    return histogram_metrics(pos, neg)


@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize("num_bins", [10, 200, 10000])
def test_histogram_metrics_are_within_their_bounds_of_sklearn(seed, num_bins):
    rng = np.random.default_rng(seed)
    n_pos, n_neg = int(rng.integers(20, 300)), int(rng.integers(200, 2000))
    u = np.concatenate([rng.normal(1.0, 1.0, n_pos), rng.normal(0.0, 1.0, n_neg)])
    positive = np.arange(len(u)) < n_pos
    got = from_histograms(u, positive, -4.0, 5.0, num_bins)  # a few values clamped
    ref = exact(u, positive)
    for key in ("AUROC", "AP", "FPR95"):
        assert abs(got[key] - ref[key]) <= got[f"{key}_bound"] + 1e-12, (key, got, ref)
    if num_bins == 10000:  # bin width 9e-4: the bounds, and the errors, are small
        assert max(got[f"{k}_bound"] for k in ("AUROC", "AP", "FPR95")) < 0.01


def test_histograms_of_quantised_scores_equal_sklearn_exactly():
    """Scores that are bin centres tie exactly as in the histogram: no error at all."""
    rng = np.random.default_rng(0)
    u = (rng.integers(0, 50, 3000) + 0.5) / 50
    positive = rng.random(3000) < 0.1 + 0.5 * u
    got, ref = from_histograms(u, positive, 0.0, 1.0, 50), exact(u, positive)
    for key in ("AUROC", "AP", "FPR95"):
        assert got[key] == pytest.approx(ref[key], abs=1e-12)


def test_scores():
    z = torch.tensor([[2.0, 0.0, -1.0], [0.0, 0.0, 0.0]])
    p = torch.softmax(z, 1).amax(1)
    torch.testing.assert_close(unknownness(z, "msp"), 1 - p)
    torch.testing.assert_close(unknownness(z, "max_logit"), torch.tensor([-2.0, 0.0]))
    torch.testing.assert_close(unknownness(z, "energy"), -torch.logsumexp(z, 1))
    with pytest.raises(ValueError, match="'entropy'"):
        unknownness(z, "entropy")
    with pytest.raises(ValueError, match="finite"):
        bin_index(torch.tensor([0.0, math.nan]), 0.0, 1.0, 10)


# ---- the metric -----------------------------------------------------------------------------
C = 4  # known classes 0-3


def samples(seed: int, n: int = 3, size=(12, 10)):
    """Real SegDataSamples: logits that make label 254 a bit more uncertain, labels with
    known classes, anomalies (254), ignored pixels (255) and a stray label (7)."""
    from mmengine.structures import PixelData
    from mmseg.structures import SegDataSample

    g = torch.Generator().manual_seed(seed)
    out = []
    for _ in range(n):
        label = torch.randint(0, C, size, generator=g)
        r = torch.rand(size, generator=g)
        label[r < 0.2] = 254
        label[(r >= 0.2) & (r < 0.3)] = 255
        label[(r >= 0.3) & (r < 0.33)] = 7
        logits = 3 * torch.randn(C, *size, generator=g)
        logits[:, label == 254] *= 0.3
        s = SegDataSample()
        s.gt_sem_seg = PixelData(data=label[None])
        s.seg_logits = PixelData(data=logits)
        s.pred_sem_seg = PixelData(data=logits.argmax(0, keepdim=True))  # as mmseg's predict
        out.append(s)
    return out


def reference(samples_, score: str) -> dict[str, float]:
    us, pos = [], []
    for s in samples_:
        label = s.gt_sem_seg.data[0]
        keep = (label == 254) | (label < C)  # not 255, not 7
        us.append(unknownness(s.seg_logits.data, score, dim=0)[keep].double().numpy())
        pos.append((label[keep] == 254).numpy())
    return {k: 100 * v for k, v in exact(np.concatenate(us), np.concatenate(pos)).items()}


def evaluator(**kw):
    from mmengine.evaluator import Evaluator

    ev = Evaluator([dict(type="IoUMetric", iou_metrics=["mIoU"]), dict(type="AnomalyMetric", **kw)])
    ev.dataset_meta = dict(classes=tuple(str(i) for i in range(C)))
    return ev


def test_metric_under_mmengines_evaluator_equals_sklearn_within_the_bound():
    batches = [samples(0), samples(1)]
    ev = evaluator()
    for batch in batches:
        ev.process(data_samples=batch, data_batch=None)
    (metric,) = [m for m in ev.metrics if type(m).__name__ == "AnomalyMetric"]
    hist = metric.histograms(metric.results)
    assert len(metric.results) == 6  # one small entry per image
    out = ev.evaluate(6)
    assert "mIoU" in out
    everything = batches[0] + batches[1]
    for score in ("msp", "max_logit", "energy"):
        bounds = histogram_metrics(*hist[score][:2])
        ref = reference(everything, score)
        for key in ("AUROC", "AP", "FPR95"):
            got = out[f"{score}/{key}"]
            assert abs(got - ref[key]) <= 100 * bounds[f"{key}_bound"] + 1e-9, (score, key)


def test_ignored_and_stray_labels_count_nowhere():
    ev = evaluator(scores=("energy",))
    batch = samples(2)
    ev.process(data_samples=batch, data_batch=None)
    metric = ev.metrics[1]
    pos, neg, _ = metric.histograms(metric.results)["energy"]
    labels = torch.cat([s.gt_sem_seg.data.flatten() for s in batch])
    assert int(pos.sum()) == int((labels == 254).sum())
    assert int(neg.sum()) == int((labels < C).sum())
    assert int(pos.sum() + neg.sum()) < labels.numel()  # 255 and 7 are left out


def test_results_of_two_ranks_sum_to_the_results_of_one():
    """What mmengine gathers under DDP: the per-image entries of each rank, summed."""
    one, a, b = evaluator(), evaluator(), evaluator()
    one.process(data_samples=samples(0) + samples(1), data_batch=None)
    a.process(data_samples=samples(0), data_batch=None)
    b.process(data_samples=samples(1), data_batch=None)
    m = one.metrics[1]
    joint = m.compute_metrics(a.metrics[1].results + b.metrics[1].results)
    assert joint == m.compute_metrics(m.results)


@pytest.mark.parametrize(
    "kw, match",
    [
        (dict(anomaly_label=255), "must differ"),
        (dict(anomaly_label=7, ignore_index=7), "must differ"),
        (dict(scores=("msp", "entropy")), r"unknown score\(s\) \['entropy'\]"),
        (dict(num_bins=0), "num_bins"),
        (dict(score_range=(3, -3)), "score_range"),
    ],
)
def test_bad_config_is_named(kw, match):
    from mmseg.registry import METRICS

    with pytest.raises(ValueError, match=match):
        METRICS.build(dict(type="AnomalyMetric", **kw))


def test_anomaly_label_of_a_known_class_or_missing_logits_fail_at_process():
    from mmseg.registry import METRICS

    metric = METRICS.build(dict(type="AnomalyMetric", anomaly_label=2))
    with pytest.raises(ValueError, match="anomaly_label 2"):
        metric.process(None, [s.to_dict() for s in samples(0, 1)])
    sample = samples(0, 1)[0]
    del sample.seg_logits
    with pytest.raises(KeyError, match="seg_logits"):
        METRICS.build(dict(type="AnomalyMetric")).process(None, [sample.to_dict()])


def test_no_anomaly_pixel_gives_a_named_warning_and_nan():
    from hem_plugins.mmseg.anomaly import AnomalyMetricWarning

    batch = samples(0)
    for s in batch:
        s.gt_sem_seg.data[s.gt_sem_seg.data == 254] = 255
    ev = evaluator(scores="msp")
    ev.process(data_samples=batch, data_batch=None)
    with pytest.warns(AnomalyMetricWarning, match="no anomaly pixel"):
        out = ev.evaluate(len(batch))
    assert all(math.isnan(out[f"msp/{k}"]) for k in ("AUROC", "AP", "FPR95"))


# ---- the dataset ----------------------------------------------------------------------------
LOAD = [dict(type="LoadImageFromFile"), dict(type="LoadAnnotations")]


def _labels(ds) -> set[int]:
    return {int(v) for i in range(len(ds)) for v in np.unique(ds[i]["gt_seg_map"])}


def test_anomaly_dataset_keeps_unknown_digits_out_of_training():
    from mmseg.registry import DATASETS

    from hem_plugins.benchmark.mmseg import digit_mosaic as dm

    build = dict(type="DigitMosaicAnomalyDataset", unknown_digits=(8, 9), pipeline=LOAD)
    train = DATASETS.build(dict(build, split="train"))
    val = DATASETS.build(dict(build, split="val"))
    assert train.metainfo["classes"] == ("background", *"01234567")
    assert train.metainfo["label_map"] is None and (len(train), len(val)) == (400, 100)
    assert _labels(train) == set(range(9))
    assert _labels(val) == set(range(9)) | {dm.ANOMALY_LABEL}
    assert "digit_mosaic_anomaly" in train.data_root
    # Other unknown digits: other classes, another cache folder.
    other = DATASETS.build(dict(build, split="val", unknown_digits=(3,), indices=5))
    assert other.metainfo["classes"] == ("background", *"012456789")
    assert other.data_root != val.data_root
    with pytest.raises(ValueError, match="unknown_digits"):
        DATASETS.build(dict(build, unknown_digits=(10,)))


def test_anomaly_generation_is_deterministic_and_leaves_digit_mosaic_alone(tmp_path):
    from hem_plugins.benchmark.mmseg import digit_mosaic as dm

    dm.generate_digit_mosaic_anomaly(tmp_path, (8, 9))
    root = dm.digit_mosaic_anomaly_root((8, 9))
    for sub in ("img_dir/val/val_00007.png", "ann_dir/val/val_00011.png"):
        assert (tmp_path / sub).read_bytes() == (root / sub).read_bytes()
    # DigitMosaic's spec (and so its cache folder and committed results) is unchanged.
    assert dm._spec_hash(dm.SPEC) == "5e92f96ecd3e"
    assert dm.digit_mosaic_root().name == "5e92f96ecd3e"


@pytest.mark.slow
@pytest.mark.parametrize("loss", ["ce", "hem", "hemplus", "logitnorm"])
def test_anomaly_config_trains_two_iterations_and_validates(tmp_path, loss):
    """Each loss's anomaly config (the anomaly_segmentation task's) trains through mmengine's
    Runner with its loss, and AnomalyMetric runs as its evaluator."""
    from mmengine.config import Config

    from hem_plugins.benchmark.mmseg.runner import train

    config = CONFIGS / f"fcn-r18tiny_digitmosaic_anomaly_{loss}.py"
    cfg = Config.fromfile(str(config))
    assert cfg.model.decode_head.num_classes == cfg.model.auxiliary_head.num_classes == 9
    want = {"ce": "CrossEntropyLoss", "hem": "HEMLoss", "hemplus": "HEMPlusLoss",
            "logitnorm": "LogitNormLoss"}[loss]  # fmt: skip
    assert cfg.model.decode_head.loss_decode.type == want
    assert cfg.model.auxiliary_head.loss_decode.type == want
    assert [e["type"] for e in cfg.test_evaluator] == ["IoUMetric", "AnomalyMetric"]
    from helpers.seg import TINY_RUN, tiny_schedule

    opts = {**TINY_RUN, **tiny_schedule(2, 2)}
    metrics = train(str(config), str(tmp_path / "run"), opts)
    assert 0.0 <= metrics["mIoU"] <= 100.0
    for score in ("msp", "max_logit", "energy"):
        for key in ("AUROC", "AP", "FPR95"):
            assert 0.0 <= metrics[f"{score}/{key}"] <= 100.0, (score, key, metrics)
