#!/usr/bin/env bash
# Distributed testing with torchrun: bash tools/dist_test.sh CONFIG CHECKPOINT GPUS [test.py args...]
set -euo pipefail
CONFIG=${1:?usage: dist_test.sh CONFIG CHECKPOINT GPUS [args...]}
CHECKPOINT=${2:?usage: dist_test.sh CONFIG CHECKPOINT GPUS [args...]}
GPUS=${3:?usage: dist_test.sh CONFIG CHECKPOINT GPUS [args...]}
shift 3
exec bash "$(dirname "${BASH_SOURCE[0]}")/_torchrun.sh" "$GPUS" test.py "$CONFIG" "$CHECKPOINT" "$@"
