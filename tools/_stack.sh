# The tested stacks, for the shell tools (sourced; ROOT must be set). EDGEFORMERS_STACK (or
# tools/setup.sh --stack) picks one:
#   main      torch 2.13, tools/constraints.txt, .venv: the whole suite, the [export] and
#             [pretrain] extras
#   torch2.1  torch 2.1.2 (CUDA 12.1 on PyPI), tools/constraints-torch2.1.txt, .venv-torch2.1:
#             the newest torch OpenMMLab publishes mmcv 2.1.0 wheels for; the [pretrain]
#             extra, no [export] extra (ExecuTorch 1.4.1 needs torch 2.13)
# EDGEFORMERS_VENV overrides the stack's environment folder.
STACK=${EDGEFORMERS_STACK:-main}
case "$STACK" in
  main)
    STACK_CONSTRAINTS=$ROOT/tools/constraints.txt
    STACK_VENV=$ROOT/.venv
    STACK_EXTRAS=test,export,pretrain
    STACK_IMPORTS="executorch, onnxruntime, coremltools, mmpretrain, backbones.pretrain"
    ;;
  torch2.1)
    STACK_CONSTRAINTS=$ROOT/tools/constraints-torch2.1.txt
    STACK_VENV=$ROOT/.venv-torch2.1
    STACK_EXTRAS=test,pretrain
    STACK_IMPORTS="mmpretrain, backbones.pretrain"
    ;;
  *)
    echo "unknown stack '$STACK' (EDGEFORMERS_STACK or --stack): choose main or torch2.1" >&2
    exit 2
    ;;
esac
VENV=${EDGEFORMERS_VENV:-$STACK_VENV}
# the torch and torchvision versions the stack pins (their lines: NAME==VERSION,!=VERSION+cpu)
STACK_TORCH=$(sed -n 's/^torch==\([^,]*\).*/\1/p' "$STACK_CONSTRAINTS")
STACK_TORCHVISION=$(sed -n 's/^torchvision==\([^,]*\).*/\1/p' "$STACK_CONSTRAINTS")
