#!/usr/bin/env bash
# What tools/dist_train.sh and tools/dist_test.sh share: run a tool under torchrun on GPUS
# processes per node. Usage: bash tools/_torchrun.sh GPUS TOOL [tool args...]
# Several nodes: NNODES=2 NODE_RANK=0|1 MASTER_ADDR=host PORT=29500 on each node.
set -euo pipefail
GPUS=$1
TOOL=$2
shift 2
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
source "$ROOT/tools/_stack.sh"  # VENV
PYTHON=${PYTHON:-$( [ -x "$VENV/bin/python" ] && echo "$VENV/bin/python" || echo python )}
PYTHONPATH="$ROOT:${PYTHONPATH:-}" exec "$PYTHON" -m torch.distributed.run \
  --nnodes="${NNODES:-1}" --node_rank="${NODE_RANK:-0}" --master_addr="${MASTER_ADDR:-127.0.0.1}" \
  --nproc_per_node="$GPUS" --master_port="${PORT:-29500}" "$ROOT/tools/$TOOL" "$@" --launcher pytorch
