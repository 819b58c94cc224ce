"""Run the Triton implementation on the CPU, under Triton's interpreter.

Started by ``tests/implementations/test_triton_interpreter.py`` in a subprocess
(``python -m helpers.triton_interpreter_check`` with ``tests/`` on the path), because
``TRITON_INTERPRET=1`` must be set before triton is imported and would leak
into other tests. The switch (``implementations.use("triton")``, which takes CPU
tensors under the interpreter) sends every case to the Triton kernels; each is
compared with the reference implementation (values and gradients) over the core's
random cases in float32, float16 and bfloat16 (the dtypes Triton takes), ``p = 1``
(the one it computes). Exits non-zero on a mismatch.
"""

from __future__ import annotations

import os
import sys

# Nothing happens at import (pytest --doctest-modules imports this file): the interpreter
# is switched on in main(), before triton is first imported, in its own process.


def run(name, logits, target, margin, kwargs, probe):
    """Loss and gradient of ``hem_loss`` on implementation ``name``."""
    from hem_plugins import hem_loss, implementations

    with implementations.use(name):
        x = logits.clone().requires_grad_(True)
        loss = hem_loss(x, target, margin, **kwargs)
        (loss * probe if probe is not None else loss).sum().backward()
    return loss.detach(), x.grad


def main() -> None:
    if "triton" in sys.modules:
        raise RuntimeError(
            "run this file as a script: triton must be imported after TRITON_INTERPRET"
        )
    os.environ["TRITON_INTERPRET"] = "1"
    import torch

    from helpers.cases import make_case

    checked = 0
    for seed in range(int(sys.argv[1]) if len(sys.argv) > 1 else 12):
        # every dtype with every reduction (seed % 4, seed % 3); float64 is not Triton's
        dtype = [torch.float32, torch.float32, torch.float16, torch.bfloat16][seed % 4]
        logits, target, margin, kwargs, rng = make_case(seed, dtype=torch.float64)
        logits = logits.to(dtype)
        if "weight" in kwargs:
            kwargs["weight"] = kwargs["weight"].to(dtype)
        kwargs["p"] = 1
        reduction = ["mean", "sum", "none"][seed % 3]
        kwargs["reduction"] = reduction
        if seed % 5 == 0:
            logits = logits.transpose(0, -1).contiguous().transpose(0, -1)  # strided
        # every divisor of docs/divisor.md, each with every reduction
        kwargs["divisor"] = ["kept", "rows", "floor", ("floor", 0.5)][(seed // 3) % 4]
        if seed % 6 == 1:  # masked units, as Avalanche's IncrementalClassifier gives them
            logits[:, -1:] = -1000.0
            kwargs["mask_value"] = -1000.0
        probe = torch.randn(target.shape, dtype=torch.float64) if reduction == "none" else None
        got, got_grad = run("triton", logits, target, margin, kwargs, probe)
        want, want_grad = run("reference", logits, target, margin, kwargs, probe)
        torch.testing.assert_close(got, want)
        # Half-precision gradients may differ by the rounding of float32 -> half: the
        # dtype's default tolerance (bf16: 1.6e-2) covers one unit in the last place.
        torch.testing.assert_close(got_grad, want_grad)
        checked += 1
    # A shape that needs several class tiles, with strided (N, C, H, W) logits.
    x = torch.randn(2, 70, 5, 3)
    t = torch.randint(0, 70, (2, 5, 3))
    t[0, 0, 0] = 255
    got = run("triton", x, t, 0.5, {"ignore_index": 255}, None)
    want = run("reference", x, t, 0.5, {"ignore_index": 255}, None)
    torch.testing.assert_close(got, want)
    print(f"triton interpreter: {checked + 1} cases match the reference implementation")


if __name__ == "__main__":
    main()
