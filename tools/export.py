#!/usr/bin/env python
"""Export a backbone, a Semantic FPN segmentor, a RetinaNet or a Mask R-CNN to mobile runtimes,
and check each export against eager PyTorch.

    python tools/export.py efficientformerv2_s0 --size 224 224 --formats executorch onnx coreml
    python tools/export.py configs/segmentation/fpn_edgevit-xxs_8xb4-40k_ade20k-512x512.py --size 512 512
    python tools/export.py configs/detection/retinanet_edgevit-xxs_fpn_8xb2-1x_coco.py --size 800 1344 --checkpoint CKPT

Formats: executorch (XNNPACK, fp32), executorch-int8 (XNNPACK pt2e quantizer; --calib DIR of
images, else random inputs), onnx (opset 18, onnxruntime), coreml (.mlpackage with an RGB
image input for backbones and end-to-end models, int32 labels / seg_map, metadata in the
package; converted and inspected here, prediction needs macOS), tflite (litert-torch, the
[tflite] extra). Each export prints its file size,
the fraction of operators delegated (ExecuTorch) and the largest difference from eager.
RetinaNet, Mask R-CNN and Semantic FPN export end to end by default: uint8 RGB image
[1, H, W, 3] in; boxes / scores / labels (decoding and NMS in the graph), for Mask R-CNN also
masks uint8 [K, H, W] (proposals, RoIAlign, box and mask heads, NMS and mask pasting in the
graph: backbones.export.two_stage), or seg_map out; metadata in the file (ONNX, Core ML) or in
<name>.json beside a .pte. --raw exports the raw network outputs instead (Mask R-CNN: FPN
features and RPN outputs, the RoI stages then run on the host: backbones.export.targets).
--cfg-options key=value ... overrides config settings as mmdet's tools do, e.g. fewer
proposals and detection slots for a phone (the shapes are fixed: every proposal costs a
RoIAlign and a box-head pass, every detection slot a mask-head pass, whether or not it holds
anything):

    python tools/export.py configs/detection/mask-rcnn_efficientformerv2-s0_fpn_8xb2-1x_coco.py --size 640 640 \\
        --cfg-options model.test_cfg.rpn.max_per_img=300 model.test_cfg.rcnn.max_per_img=20

Without --checkpoint the weights are random (a warning says so); existing files are kept
unless --force; a format that fails is reported and the exit status is non-zero.
"""
import argparse
import os
import sys
import warnings

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from _torchfree import load_cfg_options, load_runner  # noqa: E402

# Known here without importing torch, so that --help and argument errors answer at once;
# tests/test_tools_export.py checks they match backbones.export's FORMATS / MIN_SIDE.
FORMATS = ('executorch', 'executorch-int8', 'onnx', 'coreml', 'tflite')
MIN_SIDE = 32


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('model', help='a backbone name (edgevit_xxs ... efficientformerv2_l) or a config file')
    parser.add_argument('--size', type=int, nargs=2, default=(224, 224), metavar=('H', 'W'),
                        help='fixed input size of the export (default: 224 224)')
    parser.add_argument('--formats', nargs='+', default=['executorch', 'onnx'], choices=FORMATS,
                        help='default: executorch onnx')
    parser.add_argument('--checkpoint', help='weights to load (backbone or whole-model checkpoint, any layout)')
    parser.add_argument('--partial', action='store_true',
                        help='accept a checkpoint that does not fit the model completely (default: refuse it); '
                             'lists the weights that keep their initialisation')
    parser.add_argument('--calib', help='folder of images for int8 calibration')
    parser.add_argument('--out-dir', default='work_dirs/export', help='default: work_dirs/export')
    parser.add_argument('--raw', action='store_true',
                        help='detectors / segmentors: export the raw network outputs (float NCHW input) instead of '
                             'the end-to-end model (uint8 RGB image in; boxes, scores, labels / seg_map out)')
    parser.add_argument('--force', action='store_true',
                        help='replace earlier exports of the same name (never a folder that is not one)')
    load_cfg_options().add_cfg_options_argument(
        parser, 'config files only: override settings before the export, e.g. model.test_cfg.rcnn.max_per_img=20 '
                '(recorded in the export\'s metadata)')
    parser.add_argument('--debug', action='store_true', help='on an error, show its traceback (also EDGEFORMERS_DEBUG=1)')
    args = parser.parse_args(argv)
    if args.cfg_options and not args.model.endswith('.py'):
        parser.error(f'--cfg-options: {args.model} is a backbone name; config options apply to a config file, '
                     'e.g. configs/detection/mask-rcnn_efficientformerv2-s0_fpn_8xb2-1x_coco.py')
    if min(args.size) < 1:
        parser.error(f'--size {args.size[0]} {args.size[1]}: height and width must be positive, e.g. --size 224 224')
    if min(args.size) < MIN_SIDE:
        parser.error(f'--size {args.size[0]} {args.size[1]}: the backbones downsample by {MIN_SIDE}, so each side '
                     f'needs at least {MIN_SIDE} pixels; export at the size the model will run at, e.g. --size 224 224')
    if args.checkpoint and '://' not in args.checkpoint and not os.path.isfile(args.checkpoint):
        parser.error(f'--checkpoint {args.checkpoint}: no such file')
    if args.calib and not os.path.isdir(args.calib):
        parser.error(f'--calib {args.calib}: no such folder of images')
    problem = load_runner().writable_folder_problem(args.out_dir)
    if problem:
        parser.error(f'--out-dir {args.out_dir}: cannot write there ({problem}); choose a folder you can write, '
                     'e.g. --out-dir work_dirs/export')
    return args


def main(argv=None) -> int:
    args = parse_args(argv)
    from backbones.runtime.cli import run_tool  # heavy from here: torch, mmdet, the export stacks
    return run_tool(lambda _: export(args), sys.argv[1:] if argv is None else argv)


def export(args) -> int:
    from backbones.export.contract import end_to_end, export_formats
    from backbones.export.convert import calibration_images
    from backbones.export.targets import build_target
    from backbones.runtime.cli import quiet_third_party_warnings
    quiet_third_party_warnings()
    if not args.checkpoint and not args.model.endswith('.py'):
        warnings.warn(f'no --checkpoint: {args.model} is exported with random weights')
    target = build_target(args.model, tuple(args.size), args.checkpoint, partial=args.partial,
                          cfg_options=args.cfg_options)
    if args.model.endswith('.py') and not args.checkpoint and not _config_loads_weights(target):
        warnings.warn(f'no --checkpoint: {args.model} is exported with random weights')
    if not args.raw and target.kind in ('retinanet', 'two-stage', 'segmentor'):
        target = end_to_end(target, config=args.model, checkpoint=args.checkpoint, cfg_options=args.cfg_options)
    calibration = calibration_images(args.calib, tuple(args.size), uint8=target.takes_images) if args.calib else None
    print(f'{target.name} ({target.kind}) at {args.size[0]}x{args.size[1]}', flush=True)
    failed = export_formats(target, args.formats, args.out_dir, force=args.force, calibration=calibration,
                            log=lambda line: print(line, flush=True))
    return 1 if failed else 0


def _config_loads_weights(target) -> bool:
    """The config itself names pretrained weights (init_cfg with a checkpoint)."""
    init = getattr(getattr(target.full_model, 'backbone', None), 'init_cfg', None) or {}
    return bool(isinstance(init, dict) and init.get('checkpoint'))


if __name__ == '__main__':
    sys.exit(main())
