"""Real mmengine Runner runs on DigitMosaic: validation, checkpoint/resume, DDP, counts."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
import torch
from helpers.seg import DIGIT_CONFIG, REPO, TINY_RUN, subprocess_env, tiny_schedule

from hem_plugins.benchmark.mmseg.runner import train


def _buffers(model) -> dict[str, torch.Tensor]:
    return {k: v.clone() for k, v in model.state_dict().items() if "loss_decode" in k}


@pytest.mark.slow
def test_runner_trains_validates_and_resumes_online_counts_exactly(tmp_path):
    """HEM+ with no counts and no hook: online counts survive checkpoint and resume."""
    from mmengine.hooks import Hook
    from mmengine.runner import Runner

    work = str(tmp_path / "run")
    opts = {**TINY_RUN, **tiny_schedule(2, 2), "custom_hooks": []}
    with pytest.warns(UserWarning, match="online"):
        metrics = train(str(DIGIT_CONFIG["hemplus"]), work, opts)
    assert {"mIoU", "mAcc", "aAcc"} <= set(metrics)
    assert 0.0 <= metrics["mIoU"] <= 100.0

    ckpt = torch.load(f"{work}/iter_2.pth", map_location="cpu", weights_only=False)
    saved = {k: v for k, v in ckpt["state_dict"].items() if "loss_decode" in k}
    counts = saved["decode_head.loss_decode.class_counts"]
    assert counts.sum() == 2 * 2 * 64 * 64  # two batches of two 64x64 label maps
    assert counts[0] > counts[1:].sum()  # background dominates

    # Resume to iteration 3: right after loading, every loss buffer equals the checkpoint's.
    seen: dict[str, dict] = {}

    class Probe(Hook):
        def before_train(self, runner):
            seen["resumed"] = _buffers(runner.model)
            seen["iter"] = runner.iter

        def after_train(self, runner):
            seen["end"] = _buffers(runner.model)

        def after_val_epoch(self, runner, metrics=None):
            seen["val"] = {k: float(v) for k, v in metrics.items()}

    from hem_plugins.benchmark.mmseg.runner import build_cfg, mmengine_checkpoints

    cfg = build_cfg(
        str(DIGIT_CONFIG["hemplus"]), work, {**opts, **tiny_schedule(3, 3)}, resume=True
    )
    runner = Runner.from_cfg(cfg)
    runner.register_hook(Probe())
    with mmengine_checkpoints():
        runner.train()
    assert seen["iter"] == 2
    assert seen["resumed"].keys() == saved.keys()
    for k, v in saved.items():
        assert torch.equal(seen["resumed"][k], v), k
    end = seen["end"]["decode_head.loss_decode.class_counts"]
    assert end.sum() == counts.sum() + 2 * 64 * 64  # one more batch counted on top

    # tools/test_seg.py on the final checkpoint reproduces the final validation.
    from hem_plugins.benchmark.mmseg.runner import test

    same_images = {
        k.replace("val_dataloader", "test_dataloader"): v
        for k, v in opts.items()
        if k.startswith("val_dataloader")
    }
    tested = test(str(DIGIT_CONFIG["hemplus"]), f"{work}/iter_3.pth", work, same_images)
    assert tested == pytest.approx(seen["val"])


@pytest.mark.slow
def test_ddp_two_processes_identical_margins_equal_to_tool(tmp_path):
    """torchrun, 2 CPU processes (gloo): the hook gives both ranks the tool's margins."""
    work = tmp_path / "ddp"
    config = tmp_path / "ddp_hemplus.py"
    config.write_text(
        f"_base_ = [{str(DIGIT_CONFIG['hemplus'])!r}]\n"
        "custom_imports = dict(imports=['hem_plugins.mmseg', 'helpers.margin_probe'], "
        "allow_failed_imports=False)\n"
        "custom_hooks = [dict(type='HEMMarginHook', num_workers=0), "
        "dict(type='MarginProbeHook')]\n"
    )
    opts = {**TINY_RUN, **tiny_schedule(2, 2)}
    opts.pop("param_scheduler")
    cmd = [
        str(REPO / "tools" / "dist_train_seg.sh"),
        str(config),
        "2",
        "--work-dir",
        str(work),
        "--cfg-options",
        *[f"{k}={v}" for k, v in opts.items()],
    ]
    env = subprocess_env()
    env["PYTHON"] = sys.executable
    env["PORT"] = str(29500 + (hash(str(tmp_path)) % 1000))
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]

    ranks = [json.loads((work / f"margins_before_train_rank{r}.json").read_text()) for r in (0, 1)]
    assert ranks[0] == ranks[1]
    assert set(ranks[0]) == {"decode_head.loss_decode", "auxiliary_head.loss_decode"}

    # The hook's cached counts equal the tool's, and so do the margins.
    from hem_plugins.mmseg import HEMPlusLoss
    from hem_plugins.mmseg.counts import count_config

    tool = count_config(str(DIGIT_CONFIG["hemplus"]), str(tmp_path / "tool.json"), workers=0)
    (cached,) = work.glob("hem_class_counts_*.json")
    hook = json.loads(cached.read_text())
    assert hook == tool
    want = HEMPlusLoss(class_counts=str(tmp_path / "tool.json")).margins.tolist()
    assert ranks[0]["decode_head.loss_decode"] == pytest.approx(want, rel=0, abs=0)
    after = [json.loads((work / f"margins_after_train_rank{r}.json").read_text()) for r in (0, 1)]
    assert after[0] == after[1] == ranks[0]  # fixed counts: training does not move them


def test_tool_counts_equal_a_direct_count_of_the_png_files(tmp_path):
    from PIL import Image

    from hem_plugins.benchmark.mmseg.digit_mosaic import digit_mosaic_root
    from hem_plugins.mmseg.counts import count_config

    stats = count_config(str(DIGIT_CONFIG["ce"]), str(tmp_path / "c.json"), workers=0)
    direct = np.zeros(11, dtype=np.int64)
    files = sorted((digit_mosaic_root() / "ann_dir" / "train").glob("*.png"))
    for f in files:
        direct += np.bincount(np.asarray(Image.open(f)).ravel(), minlength=11)
    assert stats["counts"] == direct.tolist()
    assert stats["num_images"] == len(files) == 400
    assert stats["classes"][0] == "background"
    assert json.loads((tmp_path / "c.json").read_text()) == stats


def test_hook_reuses_the_work_dir_cache_keyed_by_fingerprint(tmp_path):
    """A second run reads the counts cached by the first; a stale fingerprint is recounted."""
    from mmengine.runner import Runner

    from hem_plugins.benchmark.mmseg.runner import build_cfg
    from hem_plugins.mmseg import HEMMarginHook, hem_losses

    cfg = build_cfg(str(DIGIT_CONFIG["hem"]), str(tmp_path), {**TINY_RUN, "custom_hooks": []})
    runner = Runner.from_cfg(cfg)
    hook = HEMMarginHook(num_workers=0)
    counted = hook._compute(runner)
    (cache,) = tmp_path.glob("hem_class_counts_*.json")
    assert cache.name == f"hem_class_counts_{counted['fingerprint']}.json"

    marked = dict(counted, num_images=123)  # a value only the cache holds
    cache.write_text(json.dumps(marked))
    assert hook._compute(runner) == marked
    hook.before_train(runner)
    for _, loss in hem_losses(runner.model):
        assert float(loss.margins) == pytest.approx((2000 / 123) ** 0.5)

    cache.write_text(json.dumps(dict(marked, fingerprint="stale")))
    assert hook._compute(runner) == counted


def test_hook_leaves_the_global_rng_as_the_cache_would(tmp_path):
    """Counting (no cache) and reading the cache leave the global torch RNG (the heads'
    dropout) in the same state: a run does not depend on the work dir's leftovers."""
    from mmengine.runner import Runner

    from hem_plugins.benchmark.mmseg.runner import build_cfg
    from hem_plugins.mmseg import HEMMarginHook

    cfg = build_cfg(str(DIGIT_CONFIG["hem"]), str(tmp_path), {**TINY_RUN, "custom_hooks": []})
    runner = Runner.from_cfg(cfg)
    hook = HEMMarginHook(num_workers=0)
    states = []
    for _ in ("count", "cache"):
        torch.manual_seed(0)
        hook._compute(runner)
        states.append(torch.get_rng_state())
    assert len(list(tmp_path.glob("hem_class_counts_*.json"))) == 1  # the second read it
    assert torch.equal(states[0], states[1])
