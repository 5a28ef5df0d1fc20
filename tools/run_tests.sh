#!/usr/bin/env bash
# Quick start, tests: set up the environment (first time only), then run the test suite.
# Arguments go to pytest (e.g. -k parity, -x, -m "not slow").
# The suite runs in parallel processes (pytest-xdist), one per core up to EDGEFORMERS_TEST_WORKERS
# (default: the cores, at most 4 and one per 6 GiB of memory); EDGEFORMERS_TEST_WORKERS=0 runs it
# in this process. The Mask R-CNN export tests take a file lock (their lowering needs several GB): one at a time.
# EDGEFORMERS_STACK=torch2.1 runs it on the second tested stack (tools/setup.sh --stack torch2.1),
# EDGEFORMERS_VENV in another environment.
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
source "$ROOT/tools/_stack.sh"  # VENV
bash "$ROOT/tools/setup.sh"
cd "$ROOT"
workers=${EDGEFORMERS_TEST_WORKERS:-}
if [ -z "$workers" ]; then
  cores=$(nproc 2>/dev/null || echo 1)
  mem_gib=$(awk '/^MemTotal:/ {print int($2 / 1048576)}' /proc/meminfo 2>/dev/null || echo 6)
  workers=$(( cores < 4 ? cores : 4 ))
  by_mem=$(( mem_gib / 6 > 0 ? mem_gib / 6 : 1 ))
  workers=$(( workers < by_mem ? workers : by_mem ))
fi
PY="$VENV/bin/python"
parallel=()
if [ "$workers" -gt 1 ] && "$PY" -c "import xdist" >/dev/null 2>&1; then
  parallel=(-n "$workers" --dist worksteal)
fi
exec "$PY" -m pytest tests "${parallel[@]}" "$@"
