#!/usr/bin/env bash
# The one prepared GPU check, for a session that has a CUDA device.
# Budget: under 9 minutes on one GPU (the steps' timeouts add up to 8.5 min):
#   1. the CUDA tests: Triton kernels against the reference implementation (values and gradients,
#      float32/float16/bfloat16), no host synchronisation with check_finite=False and at
#      most one with the checks (torch.cuda.set_sync_debug_mode), online HEM+ on the device;
#   2. the performance issue's table on CUDA: MLP training steps at batch 32, eager and
#      compiled (torch.compile, Inductor, CE compiled alike), and
#      forward+backward at every shape, float32 and bfloat16
#      (tools/bench_loss.py --suite small --device cuda --bf16-all);
#   3. the bandwidth / peak-memory table at the three large shapes, float32 and bfloat16;
#   4. one mmseg training iteration (FCN-R18, 2 x 3 x 512 x 1024) with HEMPlusLoss, built by
#      mmseg's registry, against CE.
# JSON goes to benchmarks/ (and is copied to $OUT when that is set, for a device runner
# that returns files from there). A step that fails does not stop the later ones; the
# script exits non-zero if any failed.
# Usage: PY=.venv/bin/python tools/bench_gpu.sh
set -uo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
status=0
step() {  # step SECONDS CMD...: run with a timeout, remember a failure, go on
  local limit=$1
  shift
  echo "== $* (limit ${limit}s)"
  local start=$SECONDS
  timeout "$limit" "$@" || { echo "!! failed ($?): $*"; status=1; }
  echo "== $((SECONDS - start))s"
}
"$PY" -c "import torch, triton; assert torch.cuda.is_available(), 'no CUDA device';
print(torch.__version__, 'triton', triton.__version__, torch.cuda.get_device_name())" || exit 1
mkdir -p benchmarks
step 120 "$PY" -m pytest -q -x -p no:cacheprovider tests/implementations/test_cuda.py \
  tests/implementations/test_against_reference.py -k cuda \
  tests/core/test_hem_loss.py::test_cuda_matches_cpu tests/core/test_settled.py::test_cuda_matches_cpu
step 210 "$PY" tools/bench_loss.py --suite small --device cuda --bf16-all --budget 2 \
  --out benchmarks/bench_loss_small_cuda.json
for dtype in float32 bfloat16; do
  step 50 "$PY" tools/bench_loss.py --device cuda --dtype "$dtype" --repeats 21 \
    --out "benchmarks/bench_loss_cuda_${dtype}.json"
done
step 80 "$PY" tools/bench_loss.py --device cuda --shapes 2x19x512x1024 --no-peak --repeats 15 \
  --e2e mmseg::fcn/fcn_r18-d8_4xb2-80k_cityscapes-512x1024.py --e2e-size 512x1024 \
  --out benchmarks/bench_e2e_fcn_r18_cuda.json
if [ -n "${OUT:-}" ]; then cp benchmarks/bench_loss_*cuda*.json benchmarks/bench_e2e_*cuda*.json "$OUT"/ 2>/dev/null; fi
exit $status
