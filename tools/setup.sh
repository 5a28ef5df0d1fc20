#!/usr/bin/env bash
# Set up (or check) the project's virtual environment with the exact tested stack of
# tools/constraints.txt: torch 2.13 + torchvision 0.28, mmcv 2.1.0 with compiled ops, mmengine,
# mmdet, mmsegmentation, mmpretrain, timm, pytest, the export tools and this package (editable).
#
# Usage: bash tools/setup.sh [--wheels DIR] [--force]
#   --wheels DIR   a folder of prebuilt wheels (e.g. an mmcv-2.1.0 wheel); also EDGEFORMERS_WHEELS
#   --force        reinstall even if the environment is already complete
# Environment:
#   EDGEFORMERS_VENV   where the environment lives (default: <checkout>/.venv)
#   EDGEFORMERS_WHEELS same as --wheels
#   XDG_CACHE_HOME     mmcv wheels built from source are cached in $XDG_CACHE_HOME/edgeformers
#                      (default ~/.cache/edgeformers), so a second set-up takes seconds.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
VENV=${EDGEFORMERS_VENV:-$ROOT/.venv}
WHEELS=${EDGEFORMERS_WHEELS:-}
FORCE=0
while [ $# -gt 0 ]; do
  case "$1" in
    --wheels) WHEELS=${2:?--wheels needs a folder}; shift 2 ;;
    --wheels=*) WHEELS=${1#--wheels=}; shift ;;
    --force) FORCE=1; shift ;;
    -h|--help) sed -n '2,13p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "setup.sh: unknown argument '$1' (see --help)" >&2; exit 2 ;;
  esac
done
if [ -n "$WHEELS" ] && [ ! -d "$WHEELS" ]; then
  echo "setup.sh: the wheel folder '$WHEELS' does not exist; pass an existing folder or leave it out" >&2
  exit 2
fi
CACHE=${XDG_CACHE_HOME:-$HOME/.cache}/edgeformers/wheels
MMCV_VERSION=2.1.0
# Every install below is held to the tested versions (torch's line there also excludes the
# +cpu build of 2.13.0, which breaks PyPI's torchvision).
CONSTRAINTS=$ROOT/tools/constraints.txt

log() { printf '[setup] %s\n' "$*" >&2; }

# Anything that changes what gets installed changes the stamp.
STAMP_FILE=$VENV/.edgeformers-setup
stamp=$(cat "$ROOT/pyproject.toml" "$CONSTRAINTS" "${BASH_SOURCE[0]}" | sha256sum | cut -c1-16)
check_env() {
  "$VENV/bin/python" - <<'PY' >/dev/null 2>&1
import mmcv, mmcv.ops, mmdet, mmseg, mmengine, timm, torchvision, pytest, backbones
import executorch, onnxruntime, coremltools
import mmpretrain, backbones.pretrain
assert mmcv.__version__ == "2.1.0"
PY
}
if [ "$FORCE" = 0 ] && [ -x "$VENV/bin/python" ] && [ "$(cat "$STAMP_FILE" 2>/dev/null)" = "$stamp" ] && check_env; then
  log "environment at $VENV is complete; nothing to do"
  exit 0
fi

PY_BIN=${PYTHON:-}
if [ -z "$PY_BIN" ]; then
  for candidate in python3.11 python3; do
    if command -v "$candidate" >/dev/null 2>&1; then PY_BIN=$candidate; break; fi
  done
fi
[ -n "$PY_BIN" ] || { echo "setup.sh: no python3 found; install Python 3.11 (3.9-3.12 work)" >&2; exit 1; }

if [ ! -x "$VENV/bin/python" ]; then
  log "creating virtual environment $VENV with $($PY_BIN --version)"
  "$PY_BIN" -m venv "$VENV"
fi
PIP=("$VENV/bin/python" -m pip --disable-pip-version-check)
PIP_C=(-c "$CONSTRAINTS")
# pip -q, minus the machine-specific notes about missing local index folders.
pip_q() { "${PIP[@]}" -q "$@" 2> >(grep -v "^WARNING: Location 'file:" >&2); }

log "torch 2.13.0 and torchvision 0.28.0 (the first time downloads several GB)"
pip_q install "${PIP_C[@]}" torch torchvision

# After torch, which pulls the newest setuptools: mmcv's setup.py needs pkg_resources (< 81).
log "build tools (setuptools<81 for mmcv's setup.py, wheel, ninja)"
pip_q install "${PIP_C[@]}" "setuptools>=61,<81" wheel ninja packaging

if "$VENV/bin/python" -c "import mmcv, mmcv.ops; assert mmcv.__version__ == '$MMCV_VERSION'" >/dev/null 2>&1; then
  log "mmcv $MMCV_VERSION with ops already installed"
else
  find_links=()
  [ -n "$WHEELS" ] && find_links+=(--find-links "$WHEELS")
  [ -d "$CACHE" ] && find_links+=(--find-links "$CACHE")
  if [ ${#find_links[@]} -gt 0 ] && pip_q install --no-index --no-deps "${find_links[@]}" "mmcv==$MMCV_VERSION" 2>/dev/null; then
    log "mmcv $MMCV_VERSION installed from a prebuilt wheel"
  else
    log "no prebuilt mmcv $MMCV_VERSION wheel found: building it from the PyPI sdist (the longest step of a first set-up)"
    mkdir -p "$CACHE"
    MMCV_WITH_OPS=1 MAX_JOBS=${MAX_JOBS:-$(nproc)} "${PIP[@]}" wheel --no-build-isolation --no-deps \
      --no-binary mmcv -w "$CACHE" "mmcv==$MMCV_VERSION"
    pip_q install --no-index --no-deps --find-links "$CACHE" "mmcv==$MMCV_VERSION"
    log "mmcv wheel cached in $CACHE"
  fi
fi

log "mmengine, mmdet, mmsegmentation, mmpretrain, timm, pytest, export tools (ExecuTorch, ONNX, Core ML) and edgeformers (editable)"
pip_q install --no-build-isolation "${PIP_C[@]}" -e "$ROOT[test,export,pretrain]"

if ! check_env; then
  echo "setup.sh: the environment was installed but does not import; run '$VENV/bin/python -c \"import mmcv.ops, mmdet, mmseg, mmpretrain, timm, backbones\"' to see why" >&2
  exit 1
fi
echo "$stamp" > "$STAMP_FILE"
log "done: $("$VENV/bin/python" -c 'import torch, mmcv, mmdet, mmseg, mmpretrain, timm; print(f"torch {torch.__version__}, mmcv {mmcv.__version__}, mmdet {mmdet.__version__}, mmseg {mmseg.__version__}, mmpretrain {mmpretrain.__version__}, timm {timm.__version__}")')"
