"""Every Triton kernel variant the CUDA backend can launch compiles for sm_80 and sm_90.

Ahead of time, with Triton's own compiler and the ``ptxas`` its wheel ships:
no GPU needed. A variant is one kernel with one combination of its constexpr
arguments (flags and tile sizes, ``triton_kernels.variants``) and logit dtype
(float32, float16, bfloat16). Compiled kernels land in Triton's cache
(``~/.triton/cache``), so only the first run pays the compile time.
"""

from __future__ import annotations

import pytest

triton = pytest.importorskip("triton")
GPUTarget = pytest.importorskip(
    "triton.backends.compiler",
    reason=f"triton {triton.__version__} has no triton.backends: compiling ahead of time "
    "for a GPUTarget needs triton >= 3.0",
).GPUTarget

from triton.compiler import ASTSource  # noqa: E402

from hem_plugins.implementations import triton_kernels  # noqa: E402

TARGETS = [GPUTarget("cuda", 80, 32), GPUTarget("cuda", 90, 32)]
VARIANTS = list(triton_kernels.variants())


def test_variants_cover_the_launch_choices():
    """The tile shapes the backend chooses are the ones compiled here."""
    shapes = {
        triton_kernels.tile_shape(c, contiguous)
        for c in (1, 10, 32, 33, 1000)
        for contiguous in (True, False)
    }
    assert shapes == set(triton_kernels.BLOCKS)
    # 3 dtypes x 3 tile shapes x (4 error_sum + 4 kept + 2 grad)
    assert len(VARIANTS) == 3 * 3 * 10


@pytest.mark.slow
@pytest.mark.parametrize("target", TARGETS, ids=lambda t: f"sm_{t.arch}")
def test_every_kernel_variant_compiles(target):
    failed = []
    for name, kernel, signature, constexprs in VARIANTS:
        names = kernel.arg_names
        sig = {arg: signature.get(arg, "constexpr") for arg in names}
        assert set(signature) | set(constexprs) == set(names), name
        const = {(names.index(k),): v for k, v in constexprs.items()}
        try:
            compiled = triton.compile(
                ASTSource(fn=kernel, signature=sig, constexprs=const), target=target
            )
            assert compiled.asm.get("cubin"), "no cubin"
        except Exception as err:  # collect them all: one failure would hide the rest
            failed.append(f"{name}: {type(err).__name__}: {str(err)[-300:]}")
    assert not failed, "\n".join(failed)
