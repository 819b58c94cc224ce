"""mmengine's Runner with ``compile`` trains DigitMosaic with HEM+ and no graph break in the loss."""

from __future__ import annotations

import re
import subprocess
import sys

import pytest
from helpers.seg import DIGIT_CONFIG, REPO, subprocess_env

from hem_plugins.implementations import registered_op

SCRIPT = """
import json, sys
from hem_plugins.benchmark.mmseg.runner import train
from helpers.seg import TINY_RUN
opts = {**TINY_RUN, "val_dataloader.dataset.indices": 4, "train_cfg.max_iters": 3,
        "train_cfg.val_interval": 3, "param_scheduler": [],
        "default_hooks.checkpoint.interval": 100, "compile": %s}
print("METRICS", json.dumps(train(sys.argv[1], sys.argv[2], opts)))
"""


@pytest.mark.slow
@pytest.mark.skipif(not registered_op.AVAILABLE, reason="the operator needs torch 2.4")
@pytest.mark.parametrize("variant", ["hemplus", "hem"])
def test_runner_compile_trains_with_no_graph_break_in_the_loss(variant, tmp_path):
    """``compile`` in the config (mmengine compiles ``train_step``; Dynamo's ``aot_eager``
    backend, which traces the same graphs as Inductor without generating code). Dynamo
    logs every graph break with its place: mmseg's accuracy (``nonzero``) and mmengine's
    optimizer step break, as they do for cross-entropy; nothing in this package does."""
    env = {**subprocess_env(), "TORCH_LOGS": "graph_breaks"}
    out = subprocess.run(
        [sys.executable, "-c", SCRIPT % 'dict(backend="aot_eager")', str(DIGIT_CONFIG[variant]),
         str(tmp_path / "run")],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    log = out.stdout + out.stderr
    assert out.returncode == 0, log[-3000:]
    assert "METRICS" in out.stdout
    places = re.findall(r"Graph break in user code at (\S+)", log)
    assert places, "no graph break logged at all: the log format changed, the test sees nothing"
    assert not [p for p in places if "hem_plugins" in p], places
    assert 'Model has been "compiled"' in log


@pytest.mark.skipif(not registered_op.AVAILABLE, reason="the operator needs torch 2.4")
@pytest.mark.parametrize(
    "cfg",
    [
        dict(type="HEMLoss", margin=0.8),
        dict(type="HEMPlusLoss", class_counts=[50.0, 5.0, 3.0, 1.0], num_images=20),
        dict(type="HEMPlusLoss"),
        dict(type="HEMPlusLoss", divisor="floor", loss_weight=0.4),
        dict(type="HEMPlusLoss", class_counts=[50.0, 5.0, 3.0, 1.0], num_images=20,
             margin_rule=dict(type="error")),
    ],
    ids=["hem", "hemplus_counts", "hemplus_online", "hemplus_floor", "hemplus_error"],
)  # fmt: skip
def test_decode_head_loss_compiles_whole(cfg):
    """The registered loss as a decode head calls it (``(N, C, H, W)`` logits, labels with
    255), compiled with ``fullgraph=True``: the eager loss and gradient, in one graph."""
    import warnings

    import torch
    from mmseg.registry import MODELS

    import hem_plugins.mmseg  # noqa: F401  (registers the losses)

    g = torch.Generator().manual_seed(0)
    logits = torch.randn(2, 4, 8, 8, generator=g)
    label = torch.randint(0, 4, (2, 8, 8), generator=g)
    label[:, :2] = 255
    results = []
    for compiled in (False, True):
        loss_fn = MODELS.build(cfg)
        call = lambda x, y, f=loss_fn: f(x, y, ignore_index=255)  # noqa: E731
        if compiled:
            torch._dynamo.reset()
            call = torch.compile(call, fullgraph=True, backend="aot_eager")
        x = logits.clone().requires_grad_(True)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            losses = [call(x, label) for _ in range(2)]
        sum(losses).backward()
        results.append((torch.stack([v.detach() for v in losses]), x.grad))
    torch.testing.assert_close(results[1][0], results[0][0])
    torch.testing.assert_close(results[1][1], results[0][1])
