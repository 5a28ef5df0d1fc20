#!/usr/bin/env bash
# Quick start, main job: set up the environment (first time only), then run tools/demo.py:
# make the built-in dataset, train and evaluate Mask R-CNN (EfficientFormerV2-S0) and
# Semantic FPN (EdgeViT-XXS), save checkpoints and a PNG of predictions, print the results.
# Arguments go to tools/demo.py (see --help).
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
source "$ROOT/tools/_stack.sh"  # VENV
bash "$ROOT/tools/setup.sh"
cd "$ROOT"
exec "$VENV/bin/python" "$ROOT/tools/demo.py" "$@"
