#!/usr/bin/env python
"""The main job on the built-in dataset: generate it, train Mask R-CNN (EfficientFormerV2-S0)
and Semantic FPN (EdgeViT-XXS) from the project's configs, evaluate them (COCO bbox/mask AP,
mIoU), save checkpoints and a PNG of predictions, and print a results table.

After training, both models are exported end to end (uint8 RGB image in; boxes, scores,
labels (and masks) or seg_map out) and the exports are evaluated through the torch-free
runner tools/run_exported.py with the same metrics, printed beside the eager ones.
--export-formats picks the formats (default onnx; executorch and executorch-int8, calibrated
on training images, are the others; none skips the step).

Any config works (--det-config / --seg-config, or 'none' to skip one); the data size,
image size and schedule are options. --pretrain first pretrains each backbone as a classifier
(configs/classification, mmpretrain) on the dataset's ImageNet layout and starts the
detector and segmentor from it.
"""
import argparse
import os
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from backbones.demo.configs import check_config_task  # noqa: E402
from backbones.demo.exported import EVALUATED_FORMATS  # noqa: E402
from backbones.demo.job import format_results, run_demo  # noqa: E402
from backbones.runtime.cli import (UserError, add_debug_argument, check_writable_dir,  # noqa: E402
                                   quiet_third_party_warnings, run_tool)

DEFAULT_DET_CONFIG = os.path.join(ROOT, 'configs', 'detection', 'mask-rcnn_efficientformerv2-s0_fpn_8xb2-1x_coco.py')
DEFAULT_SEG_CONFIG = os.path.join(ROOT, 'configs', 'segmentation', 'fpn_edgevit-xxs_8xb4-40k_ade20k-512x512.py')


def main(argv=None) -> int:
    """The command line; errors end as one line (``run_tool``)."""
    return run_tool(_main, argv)


def _main(argv) -> int:
    quiet_third_party_warnings()
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--work-dir', default='work_dirs/demo', help='outputs (default: work_dirs/demo)')
    parser.add_argument('--data-root', help='where the dataset is written (default: WORK_DIR/data)')
    parser.add_argument('--det-config', default=DEFAULT_DET_CONFIG,
                        help="a configs/detection config, or 'none' (default: Mask R-CNN EfficientFormerV2-S0)")
    parser.add_argument('--seg-config', default=DEFAULT_SEG_CONFIG,
                        help="a configs/segmentation config, or 'none' (default: Semantic FPN EdgeViT-XXS)")
    parser.add_argument('--num-train', type=int, default=200, help='training images (default: 200)')
    parser.add_argument('--num-val', type=int, default=50, help='validation images (default: 50)')
    parser.add_argument('--size', type=int, default=192, help='image side in pixels (default: 192)')
    parser.add_argument('--det-iters', type=int, default=120, help='detector training iterations (default: 120)')
    parser.add_argument('--seg-iters', type=int, default=150, help='segmentor training iterations (default: 150)')
    parser.add_argument('--batch-size', type=int, default=4, help='images per iteration (default: 4)')
    parser.add_argument('--seed', type=int, default=0, help='dataset seed, >= 0 (default: 0)')
    parser.add_argument('--export-formats', nargs='+', default=['onnx'],
                        choices=list(EVALUATED_FORMATS) + ['none'],
                        help='end-to-end exports evaluated after training (default: onnx; none skips them)')
    parser.add_argument('--pretrain', action='store_true',
                        help='first pretrain each backbone as a classifier with its configs/classification config on '
                             "the dataset's ImageNet layout, and start the detector and segmentor from it (the path "
                             'from ImageNet to the phone, in small; needs the [pretrain] extra, mmpretrain)')
    parser.add_argument('--pretrain-iters', type=int, default=60, help='pretraining iterations (default: 60)')
    add_debug_argument(parser)
    args = parser.parse_args(argv)
    for name in ('num_train', 'num_val', 'det_iters', 'seg_iters', 'batch_size', 'pretrain_iters'):
        if getattr(args, name) < 1:
            parser.error(f'--{name.replace("_", "-")} must be at least 1')
    if args.size < 64:
        parser.error('--size must be at least 64 pixels')
    if args.seed < 0:
        parser.error(f'--seed {args.seed}: the dataset seed must be 0 or more')
    configs = {}
    for key in ('det_config', 'seg_config'):
        value = getattr(args, key)
        if value and value.lower() == 'none':
            value = None
        elif value and not os.path.isfile(value):
            parser.error(f'--{key.replace("_", "-")} {value}: no such config file')
        elif value:
            try:
                check_config_task(value, 'detection' if key == 'det_config' else 'segmentation',
                                  f'--{key.replace("_", "-")}')
            except ValueError as err:
                parser.error(str(err))
        configs[key] = value
    for flag, path in (('--work-dir', args.work_dir), ('--data-root', args.data_root)):
        try:
            if path:
                check_writable_dir(path, flag)
        except UserError as err:
            parser.error(str(err))
    results = run_demo(work_dir=args.work_dir, data_root=args.data_root, num_train=args.num_train,
                       num_val=args.num_val, size=args.size, det_iters=args.det_iters,
                       seg_iters=args.seg_iters, batch_size=args.batch_size, seed=args.seed,
                       export_formats=[f for f in args.export_formats if f != 'none'],
                       classification_dir=os.path.join(ROOT, 'configs', 'classification') if args.pretrain else None,
                       pretrain_iters=args.pretrain_iters, **configs)
    print(format_results(results))
    return 0


if __name__ == '__main__':
    sys.exit(main())
