#!/usr/bin/env python
"""Export a backbone, a Semantic FPN segmentor, or the dense part of a RetinaNet / Mask R-CNN
to mobile runtimes, and check each export against eager PyTorch.

    python tools/export.py efficientformerv2_s0 --size 224 224 --formats executorch onnx coreml
    python tools/export.py configs/segmentation/fpn_edgevit-xxs_8xb4-40k_ade20k-512x512.py --size 512 512
    python tools/export.py configs/detection/retinanet_edgevit-xxs_fpn_8xb2-1x_coco.py --size 800 1344 --checkpoint CKPT

Formats: executorch (XNNPACK, fp32), executorch-int8 (XNNPACK pt2e quantizer; --calib DIR of
images, else random inputs), onnx (opset 18, onnxruntime), coreml (.mlpackage; prediction
needs macOS), tflite (litert-torch, the [tflite] extra). Each export prints its file size,
the fraction of operators delegated (ExecuTorch) and the largest difference from eager.
RetinaNet and Semantic FPN export end to end by default: uint8 RGB image [1, H, W, 3] in;
boxes / scores / labels (decoding and NMS in the graph) or seg_map out; metadata in the file
(ONNX, Core ML) or in <name>.json beside a .pte. --raw exports the raw network outputs instead;
Mask R-CNN always does (its RoI stages run on the host: backbones.export.targets).
Without --checkpoint the weights are random (a warning says so); existing files are kept
unless --force; a format that fails is reported and the exit status is non-zero.
"""
import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def main(argv=None) -> int:
    import warnings
    from backbones.export.contract import end_to_end, export_formats
    from backbones.export.convert import calibration_images
    from backbones.export.formats import FORMATS
    from backbones.export.targets import build_target
    from backbones.runtime.cli import add_size_argument, quiet_third_party_warnings
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('model', help='a backbone name (edgevit_xxs ... efficientformerv2_l) or a config file')
    add_size_argument(parser, (224, 224), help='fixed input size of the export')
    parser.add_argument('--formats', nargs='+', default=['executorch', 'onnx'], choices=list(FORMATS),
                        help='default: executorch onnx')
    parser.add_argument('--checkpoint', help='weights to load (backbone or whole-model checkpoint, any layout)')
    parser.add_argument('--calib', help='folder of images for int8 calibration')
    parser.add_argument('--out-dir', default='work_dirs/export', help='default: work_dirs/export')
    parser.add_argument('--raw', action='store_true',
                        help='detectors / segmentors: export the raw network outputs (float NCHW input) instead of '
                             'the end-to-end model (uint8 RGB image in; boxes, scores, labels / seg_map out)')
    parser.add_argument('--force', action='store_true', help='overwrite existing files')
    args = parser.parse_args(argv)
    quiet_third_party_warnings()
    if not args.checkpoint and not args.model.endswith('.py'):
        warnings.warn(f'no --checkpoint: {args.model} is exported with random weights')
    target = build_target(args.model, tuple(args.size), args.checkpoint)
    if args.model.endswith('.py') and not args.checkpoint and not _config_loads_weights(target):
        warnings.warn(f'no --checkpoint: {args.model} is exported with random weights')
    if not args.raw and target.kind in ('retinanet', 'segmentor'):
        target = end_to_end(target, config=args.model, checkpoint=args.checkpoint)
    calibration = calibration_images(args.calib, tuple(args.size)) if args.calib else None
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
