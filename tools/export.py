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
Detectors export backbone + neck + dense heads; anchor decoding, NMS and RoI stages run on
the host (backbones.export.targets.retinanet_postprocess / mask_rcnn_postprocess).
"""
import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def main(argv=None) -> int:
    from backbones.checkpoints.io import CheckpointFileError
    from backbones.checkpoints.loading import CheckpointMismatchError
    from backbones.export.convert import calibration_images, export
    from backbones.export.formats import FORMATS, MissingExtra
    from backbones.export.targets import build_target
    from backbones.runtime.cli import add_size_argument, quiet_third_party_warnings
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('model', help='a backbone name (edgevit_xxs ... efficientformerv2_l) or a config file')
    add_size_argument(parser, (224, 224), help='fixed input size of the export')
    parser.add_argument('--formats', nargs='+', default=['executorch', 'onnx'], choices=list(FORMATS),
                        help='default: executorch onnx')
    parser.add_argument('--checkpoint', help='weights to load (backbone or whole-model checkpoint, any layout)')
    parser.add_argument('--partial', action='store_true',
                        help='accept a checkpoint that does not fit the model completely (default: refuse it); '
                             'lists the weights that keep their initialisation')
    parser.add_argument('--calib', help='folder of images for int8 calibration')
    parser.add_argument('--out-dir', default='work_dirs/export', help='default: work_dirs/export')
    args = parser.parse_args(argv)
    quiet_third_party_warnings()
    try:
        target = build_target(args.model, tuple(args.size), args.checkpoint, partial=args.partial)
    except (CheckpointFileError, CheckpointMismatchError) as err:
        print(f'error: {err}', file=sys.stderr)
        return 2
    calibration = calibration_images(args.calib, tuple(args.size)) if args.calib else None
    print(f'{target.name} ({target.kind}) at {args.size[0]}x{args.size[1]}', flush=True)
    failed = 0
    for fmt in args.formats:
        try:
            print(export(target, fmt, args.out_dir, calibration=calibration).describe(), flush=True)
        except MissingExtra as err:
            print(f'{fmt:<16} skipped: {err}', flush=True)
            failed += 1
    return 1 if failed else 0


if __name__ == '__main__':
    sys.exit(main())
