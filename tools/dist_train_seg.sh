#!/usr/bin/env bash
# DDP training on torchrun: tools/dist_train_seg.sh CONFIG NUM_PROCS [train_seg.py args...]
# Without GPUs the processes use the gloo backend on the CPU. PYTHON picks the interpreter, in
# which hem_plugins is installed (pip install -e .).
set -euo pipefail
CONFIG=$1
NPROC=$2
NNODES=${NNODES:-1}
NODE_RANK=${NODE_RANK:-0}
PORT=${PORT:-29500}
MASTER_ADDR=${MASTER_ADDR:-"127.0.0.1"}
PYTHON=${PYTHON:-python}
HERE=$(cd "$(dirname "$0")" && pwd)

"$PYTHON" -m torch.distributed.run \
    --nnodes="$NNODES" \
    --node_rank="$NODE_RANK" \
    --master_addr="$MASTER_ADDR" \
    --nproc_per_node="$NPROC" \
    --master_port="$PORT" \
    "$HERE/train_seg.py" \
    "$CONFIG" \
    --launcher pytorch "${@:3}"
