#!/usr/bin/env bash
# Quick start, main job: set up the environment (first time only), then build a RetinaNet
# around every backbone and print parameter counts and feature shapes.
# Arguments go to tools/build_models.py (see --help).
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
bash "$ROOT/tools/setup.sh"
exec "${EDGEFORMERS_VENV:-$ROOT/.venv}/bin/python" "$ROOT/tools/build_models.py" "$@"
