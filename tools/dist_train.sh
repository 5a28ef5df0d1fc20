#!/usr/bin/env bash
# Distributed training with torchrun: bash tools/dist_train.sh CONFIG GPUS [train.py args...]
# Several nodes: NNODES=2 NODE_RANK=0|1 MASTER_ADDR=host PORT=29500 on each node.
set -euo pipefail
CONFIG=${1:?usage: dist_train.sh CONFIG GPUS [args...]}
GPUS=${2:?usage: dist_train.sh CONFIG GPUS [args...]}
shift 2
exec bash "$(dirname "${BASH_SOURCE[0]}")/_torchrun.sh" "$GPUS" train.py "$CONFIG" "$@"
