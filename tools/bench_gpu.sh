#!/usr/bin/env bash
# The one prepared GPU check of the fast path (issue 6), for a session that has a CUDA device.
# Runs in about 2-4 minutes on one GPU, well under the 10-minute limit of a device call:
#   1. the CUDA correctness tests (Triton kernels vs the reference path, values and gradients);
#   2. tools/bench_loss.py --device cuda at the three default shapes, float32 and bfloat16,
#      writing benchmarks/bench_loss_cuda_float32.json and benchmarks/bench_loss_cuda_bfloat16.json
#      (and a copy under $OUT when that is set, for a device runner that returns files from there).
# Usage: PY=.venv/bin/python tools/bench_gpu.sh
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
"$PY" -c "import torch, triton; assert torch.cuda.is_available(), 'no CUDA device';
print(torch.__version__, 'triton', triton.__version__, torch.cuda.get_device_name())"
timeout 240 "$PY" -m pytest -q -x -p no:cacheprovider \
  tests/test_fast_paths.py -k cuda tests/test_hem_loss.py::test_cuda_matches_cpu
mkdir -p benchmarks
for dtype in float32 bfloat16; do
  timeout 150 "$PY" tools/bench_loss.py --device cuda --dtype "$dtype" --repeats 21 \
    --out "benchmarks/bench_loss_cuda_${dtype}.json"
done
if [ -n "${OUT:-}" ]; then cp benchmarks/bench_loss_cuda_*.json "$OUT"/; fi
