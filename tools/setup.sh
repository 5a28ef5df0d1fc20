#!/usr/bin/env bash
# Set up (or check) a virtual environment with one of the project's tested stacks, pinned
# exactly by its constraints file: torch, torchvision, mmcv 2.1.0 with compiled ops, mmengine,
# mmdet, mmsegmentation, mmpretrain, timm, pytest and this package (editable), plus
#   main (default)  torch 2.13 (tools/constraints.txt) and the export tools, in .venv
#   torch2.1        torch 2.1.2 (tools/constraints-torch2.1.txt), in .venv-torch2.1
#
# Usage: bash tools/setup.sh [--stack main|torch2.1] [--wheels DIR] [--force]
#   --stack NAME   the stack; also EDGEFORMERS_STACK
#   --wheels DIR   a folder of prebuilt wheels (an mmcv-2.1.0 wheel for torch 2.13 at its top,
#                  for another torch in DIR/torch-VERSION/); also EDGEFORMERS_WHEELS
#   --force        reinstall even if the environment is already complete
# Environment:
#   EDGEFORMERS_VENV      where the environment lives (default: the stack's folder above)
#   EDGEFORMERS_MMCV_OPS  auto (default), cpu or cuda: mmcv's ops get CUDA kernels (auto: where
#                         a CUDA toolkit, nvcc, and a GPU are both present), else CPU ones only
#   XDG_CACHE_HOME        mmcv wheels built from source are cached in $XDG_CACHE_HOME/edgeformers
#                         (default ~/.cache/edgeformers), one folder per torch build and per
#                         CPU / CUDA ops, so a second set-up takes seconds
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
WHEELS=${EDGEFORMERS_WHEELS:-}
FORCE=0
while [ $# -gt 0 ]; do
  case "$1" in
    --stack) EDGEFORMERS_STACK=${2:?--stack needs a name: main or torch2.1}; shift 2 ;;
    --stack=*) EDGEFORMERS_STACK=${1#--stack=}; shift ;;
    --wheels) WHEELS=${2:?--wheels needs a folder}; shift 2 ;;
    --wheels=*) WHEELS=${1#--wheels=}; shift ;;
    --force) FORCE=1; shift ;;
    -h|--help) sed -n '2,19p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "setup.sh: unknown argument '$1' (see --help)" >&2; exit 2 ;;
  esac
done
# STACK, VENV, STACK_CONSTRAINTS, STACK_EXTRAS, STACK_IMPORTS, STACK_TORCH, STACK_TORCHVISION
source "$ROOT/tools/_stack.sh"
if [ -n "$WHEELS" ] && [ ! -d "$WHEELS" ]; then
  echo "setup.sh: the wheel folder '$WHEELS' does not exist; pass an existing folder or leave it out" >&2
  exit 2
fi
OPS_MODE=${EDGEFORMERS_MMCV_OPS:-auto}
case "$OPS_MODE" in
  auto|cpu|cuda) ;;
  *) echo "setup.sh: EDGEFORMERS_MMCV_OPS=$OPS_MODE: choose auto, cpu or cuda" >&2; exit 2 ;;
esac
CACHE_ROOT=${XDG_CACHE_HOME:-$HOME/.cache}/edgeformers/wheels
MMCV_VERSION=2.1.0
# Every install below is held to the stack's tested versions (its torch line also excludes
# torch's +cpu build, which breaks PyPI's torchvision).
CONSTRAINTS=$STACK_CONSTRAINTS

log() { printf '[setup] %s\n' "$*" >&2; }
fail() { echo "setup.sh: $*" >&2; exit 1; }

# One stack per environment: a folder that holds another torch is refused (installing over it
# would leave the other stack's packages behind, built for that torch).
STAMP_FILE=$VENV/.edgeformers-setup
if [ -x "$VENV/bin/python" ]; then
  have_torch=$("$VENV/bin/python" -c "import importlib.metadata as m; print(m.version('torch'))" 2>/dev/null || true)
  have_stack=$(sed -n 's/^stack=\([^ ]*\).*/\1/p' "$STAMP_FILE" 2>/dev/null || true)
  if { [ -n "$have_stack" ] && [ "$have_stack" != "$STACK" ]; } || \
     { [ -n "$have_torch" ] && [ "${have_torch%%+*}" != "$STACK_TORCH" ]; }; then
    echo "setup.sh: $VENV holds ${have_stack:+the $have_stack stack, }torch ${have_torch:-?}, not the $STACK stack" \
         "(torch $STACK_TORCH); set EDGEFORMERS_VENV to another folder, or delete this one" >&2
    exit 2
  fi
fi

# Where mmcv's ops get CUDA kernels: a CUDA toolkit (nvcc) and a GPU, and a torch built with CUDA.
nvcc_path() {
  if [ -n "${CUDA_HOME:-}" ] && [ -x "$CUDA_HOME/bin/nvcc" ]; then echo "$CUDA_HOME/bin/nvcc"
  elif command -v nvcc >/dev/null 2>&1; then command -v nvcc
  elif [ -x /usr/local/cuda/bin/nvcc ]; then echo /usr/local/cuda/bin/nvcc
  fi
}
gpu_present() {
  { command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L 2>/dev/null | grep -q '^GPU '; } || \
    "$VENV/bin/python" -c "import torch, sys; sys.exit(not torch.cuda.is_available())" >/dev/null 2>&1
}
# the build's CUDA architectures: TORCH_CUDA_ARCH_LIST, else those of the GPUs here
cuda_arch_list() {
  if [ -n "${TORCH_CUDA_ARCH_LIST:-}" ]; then echo "$TORCH_CUDA_ARCH_LIST"; return; fi
  "$VENV/bin/python" - <<'PY' 2>/dev/null || nvidia-smi --query-gpu=compute_cap --format=csv,noheader 2>/dev/null | sort -u | paste -sd ';'
import torch
assert torch.cuda.is_available()
print(';'.join(sorted({'%d.%d' % torch.cuda.get_device_capability(i) for i in range(torch.cuda.device_count())})))
PY
}
# VARIANT: "cpu", or "cudaX.Y-archA_B": the ops an mmcv build needs here; for cuda also NVCC,
# CUDA_TOOLKIT (the toolkit's folder, as nvcc itself reports it) and ARCH_LIST
detect_variant() {
  VARIANT=cpu
  [ "$OPS_MODE" = cpu ] && return
  NVCC=$(nvcc_path)
  [ "$OPS_MODE" = auto ] && [ -z "$NVCC" ] && return
  local torch_cuda
  torch_cuda=$("$VENV/bin/python" -c "import torch; print(torch.version.cuda or '')" 2>/dev/null || true)
  if [ "$OPS_MODE" = auto ] && { [ -z "$torch_cuda" ] || ! gpu_present; }; then return; fi
  [ -n "$NVCC" ] || fail "EDGEFORMERS_MMCV_OPS=cuda: no CUDA toolkit found (nvcc on PATH, \$CUDA_HOME/bin or /usr/local/cuda/bin); install one or set EDGEFORMERS_MMCV_OPS=cpu"
  [ -n "$torch_cuda" ] || fail "EDGEFORMERS_MMCV_OPS=cuda: the torch in $VENV is a CPU build; CUDA ops need PyPI's CUDA build of torch $STACK_TORCH (or set EDGEFORMERS_MMCV_OPS=cpu)"
  local nvcc_cuda
  nvcc_cuda=$("$NVCC" --version | sed -n 's/.*release \([0-9][0-9]*\.[0-9][0-9]*\).*/\1/p')
  if [ "${nvcc_cuda%%.*}" != "${torch_cuda%%.*}" ]; then
    fail "nvcc ($NVCC) is CUDA $nvcc_cuda, but torch $STACK_TORCH is built with CUDA $torch_cuda: mmcv's CUDA ops need a CUDA ${torch_cuda%%.*}.x toolkit (point CUDA_HOME at one), or set EDGEFORMERS_MMCV_OPS=cpu for CPU ops only"
  fi
  CUDA_TOOLKIT=${CUDA_HOME:-$(cd "$("$NVCC" -dryrun -E -x cu /dev/null 2>&1 | sed -n 's/^#\$ TOP=//p')" && pwd)}
  ARCH_LIST=$(cuda_arch_list)
  [ -n "$ARCH_LIST" ] || fail "no GPU architecture found for mmcv's CUDA build; set TORCH_CUDA_ARCH_LIST (e.g. \"8.0;9.0\")"
  VARIANT="cuda$torch_cuda-arch$(printf '%s' "$ARCH_LIST" | tr -c '0-9A-Za-z.' '_')"
}
# what the installed mmcv's ops were compiled with: "CUDA 12.1 (GCC 12.2)" or "CPU only (GCC 12.2)"
mmcv_ops_built() {
  "$VENV/bin/python" - <<PY 2>/dev/null
import mmcv, mmcv.ops as ops
assert mmcv.__version__ == '$MMCV_VERSION'
cuda = ops.get_compiling_cuda_version()
print(('CPU only' if cuda == 'not available' else f'CUDA {cuda}') + f' ({ops.get_compiler_version()})')
PY
}
# whether the installed mmcv imports with the ops this variant needs
mmcv_fits() {
  local built
  built=$(mmcv_ops_built) || return 1
  case "$1" in cuda*) [ "${built#CUDA}" != "$built" ] ;; *) return 0 ;; esac
}

check_env() {
  "$VENV/bin/python" - <<PY >/dev/null 2>&1
import mmcv, mmcv.ops, mmdet, mmseg, mmengine, timm, torch, torchvision, pytest, backbones
import $STACK_IMPORTS
assert mmcv.__version__ == "$MMCV_VERSION" and torch.__version__.split('+')[0] == "$STACK_TORCH"
PY
}

# Anything that changes what gets installed changes the stamp: the files, the stack, mmcv's ops.
stamp_of() {
  echo "stack=$STACK ops=$1 $(cat "$ROOT/pyproject.toml" "$CONSTRAINTS" "${BASH_SOURCE[0]}" "$ROOT/tools/_stack.sh" \
    | sha256sum | cut -c1-16)"
}
if [ "$FORCE" = 0 ] && [ -x "$VENV/bin/python" ] && [ -f "$STAMP_FILE" ]; then
  detect_variant
  if [ "$(cat "$STAMP_FILE")" = "$(stamp_of "$VARIANT")" ] && check_env; then
    log "environment at $VENV ($STACK stack) is complete; nothing to do"
    exit 0
  fi
fi

PY_BIN=${PYTHON:-}
if [ -z "$PY_BIN" ]; then
  for candidate in python3.11 python3; do
    if command -v "$candidate" >/dev/null 2>&1; then PY_BIN=$candidate; break; fi
  done
fi
[ -n "$PY_BIN" ] || { echo "setup.sh: no python3 found; install Python 3.11 (3.9-3.12 work)" >&2; exit 1; }

if [ ! -x "$VENV/bin/python" ]; then
  log "creating virtual environment $VENV ($STACK stack) with $($PY_BIN --version)"
  "$PY_BIN" -m venv "$VENV"
fi
PIP=("$VENV/bin/python" -m pip --disable-pip-version-check)
PIP_C=(-c "$CONSTRAINTS")
# pip -q, minus the machine-specific notes about missing local index folders.
pip_q() { "${PIP[@]}" -q "$@" 2> >(grep -v "^WARNING: Location 'file:" >&2); }

log "torch $STACK_TORCH and torchvision $STACK_TORCHVISION (the first time downloads several GB)"
pip_q install "${PIP_C[@]}" torch torchvision

# After torch, which pulls the newest setuptools: mmcv's setup.py needs pkg_resources (< 81).
log "build tools (setuptools<81 for mmcv's setup.py, wheel, ninja) and what mmcv imports (mmengine, opencv, ...)"
pip_q install "${PIP_C[@]}" "setuptools>=61,<81" wheel ninja packaging \
  addict mmengine numpy opencv-python Pillow pyyaml yapf

detect_variant
if [ "$VARIANT" = cpu ]; then
  log "mmcv $MMCV_VERSION with CPU ops (CUDA ops need both a CUDA toolkit, nvcc, and a GPU)"
else
  log "mmcv $MMCV_VERSION with CUDA ops ($VARIANT; toolkit: $CUDA_TOOLKIT, GPU architectures: $ARCH_LIST)"
fi
# built wheels, one folder per torch build and ops (a wheel only fits the torch it was built against)
torch_full=$("$VENV/bin/python" -c "import torch; print(torch.__version__)")
CACHE=$CACHE_ROOT/mmcv-$MMCV_VERSION/torch-$torch_full/$VARIANT
# prebuilt wheels: DIR/torch-X.Y.Z/ for any torch, and DIR itself for the main stack's torch
prebuilt=()
if [ -n "$WHEELS" ]; then
  [ -d "$WHEELS/torch-$STACK_TORCH" ] && prebuilt+=("$WHEELS/torch-$STACK_TORCH")
  [ "$STACK" = main ] && prebuilt+=("$WHEELS")
fi
install_mmcv_from() {  # install_mmcv_from FOLDER: the mmcv wheel there, if one installs and fits
  pip_q install --no-index --no-deps --force-reinstall --find-links "$1" "mmcv==$MMCV_VERSION" 2>/dev/null \
    && mmcv_fits "$VARIANT"
}
if mmcv_fits "$VARIANT"; then
  log "mmcv $MMCV_VERSION already installed: ops $(mmcv_ops_built)"
else
  done_mmcv=0
  for folder in ${prebuilt[@]+"${prebuilt[@]}"} "$CACHE"; do
    if [ -d "$folder" ] && ls "$folder"/mmcv-"$MMCV_VERSION"-*.whl >/dev/null 2>&1; then
      if install_mmcv_from "$folder"; then
        log "mmcv $MMCV_VERSION installed from the prebuilt wheel in $folder"
        done_mmcv=1
        break
      fi
      log "the mmcv wheel in $folder does not fit ($(mmcv_ops_built || echo 'does not import with this torch')); passing over it"
    fi
  done
  if [ "$done_mmcv" = 0 ]; then
    log "no fitting mmcv $MMCV_VERSION wheel: building it from the PyPI sdist (the longest step of a first set-up)"
    mkdir -p "$CACHE"
    build_env=(MMCV_WITH_OPS=1 MAX_JOBS="${MAX_JOBS:-$(nproc)}")
    if [ "$VARIANT" = cpu ]; then
      build_env+=(FORCE_CUDA=0 CUDA_VISIBLE_DEVICES=)  # mmcv's setup.py builds CUDA ops wherever torch sees a GPU
    else
      build_env+=(FORCE_CUDA=1 TORCH_CUDA_ARCH_LIST="$ARCH_LIST" CUDA_HOME="$CUDA_TOOLKIT")
    fi
    # --no-cache-dir: pip's own wheel cache would hand back a build made against another torch
    env "${build_env[@]}" "${PIP[@]}" wheel --no-cache-dir --no-build-isolation --no-deps \
      --no-binary mmcv -w "$CACHE" "mmcv==$MMCV_VERSION"
    install_mmcv_from "$CACHE" || fail "the mmcv $MMCV_VERSION wheel built in $CACHE does not import with the ops it was built for ($(mmcv_ops_built || echo 'import failed')); delete $CACHE and run again"
    log "mmcv wheel cached in $CACHE"
  fi
fi
log "mmcv $MMCV_VERSION ops: $(mmcv_ops_built)"

log "mmengine, mmdet, mmsegmentation, mmpretrain, timm, pytest$([ "$STACK" = main ] && echo ', export tools (ExecuTorch, ONNX, Core ML)') and edgeformers (editable, [$STACK_EXTRAS])"
pip_q install --no-build-isolation "${PIP_C[@]}" -e "$ROOT[$STACK_EXTRAS]"

if ! check_env; then
  echo "setup.sh: the environment was installed but does not import; run '$VENV/bin/python -c \"import mmcv.ops, mmdet, mmseg, timm, backbones, $STACK_IMPORTS\"' to see why" >&2
  exit 1
fi
stamp_of "$VARIANT" > "$STAMP_FILE"
log "done ($STACK stack in $VENV): $("$VENV/bin/python" -c 'import torch, mmcv, mmdet, mmseg, timm; print(f"torch {torch.__version__}, mmcv {mmcv.__version__}, mmdet {mmdet.__version__}, mmseg {mmseg.__version__}, timm {timm.__version__}")')"
