#!/usr/bin/env bash
# Quick start, tests: set up the environment (first time only), then run the test suite.
# Arguments go to pytest (e.g. -k parity, -x).
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
bash "$ROOT/tools/setup.sh"
cd "$ROOT"
exec "${EDGEFORMERS_VENV:-$ROOT/.venv}/bin/python" -m pytest tests "$@"
