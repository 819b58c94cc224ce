"""``import hem_plugins`` needs torch alone: the toolkits load only in their adapters, and triton
only where a CUDA call runs on the Triton implementation."""

from __future__ import annotations

import subprocess
import sys

BLOCKED = (
    "avalanche",
    "mmseg",
    "mmengine",
    "mmcv",
    "sklearn",
    "matplotlib",
    "torchmetrics",
    "triton",
)


def test_core_imports_with_every_toolkit_blocked():
    code = (
        "import sys\n"
        f"for name in {BLOCKED!r}:\n"
        "    sys.modules[name] = None  # any import of it now fails\n"
        "import torch, hem_plugins\n"
        "x = torch.randn(4, 3, requires_grad=True)\n"
        "hem_plugins.HEMPlusLoss(class_counts=[3, 2, 1])(x, torch.tensor([0, 1, 2, 0])).backward()\n"
        "print(hem_plugins.settled_mask(x, torch.tensor([0, 1, 2, 0]), 0.5).shape)\n"
        "import hem_plugins.unknown as u\n"
        "print(u.histogram_metrics([0, 1], [1, 0])['AUROC'], u.unknownness(x, 'energy').shape)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert "torch.Size([4])" in out.stdout
    assert "1.0 torch.Size([4])" in out.stdout  # hem_plugins.unknown: torch only too
