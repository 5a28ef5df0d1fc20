#!/usr/bin/env python
"""GPU smoke test: train RetinaNet EdgeViT-XXS, Mask R-CNN EfficientFormerV2-S0, Semantic FPN
EdgeViT-XXS and the EdgeViT-XXS ImageNet classifier (its pretraining recipe on the dataset's
object crops at half the image side, 32 per batch) for a few iterations each on the built-in
dataset, in mixed precision as `tools/train.py --amp` trains, and write per model the median iteration time, the peak GPU
memory, the last loss and the mmcv ops that ran (device, dtype) to tools/results/gpu_smoke.md
(and .json), headed by the command, the date and the machine.

    python tools/gpu_smoke.py                       # 50 iterations each at 512x512
    python tools/gpu_smoke.py --iters 200 --size 800 --batch-size 4

Without CUDA the models train on the CPU in float32 (--amp needs CUDA), which checks the
script but measures no GPU. Exit status 1 when a model fails or ends with a non-finite loss.
"""
import argparse
import os
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from backbones.runtime.cli import (EXIT_FAILED, add_debug_argument, positive_int,  # noqa: E402
                                   quiet_third_party_warnings, run_tool)

#: the models of the smoke test: name -> config
MODELS = {
    'retinanet_edgevit-xxs': os.path.join(ROOT, 'configs', 'detection', 'retinanet_edgevit-xxs_fpn_8xb2-1x_coco.py'),
    'mask-rcnn_efficientformerv2-s0': os.path.join(ROOT, 'configs', 'detection',
                                                   'mask-rcnn_efficientformerv2-s0_fpn_8xb2-1x_coco.py'),
    'fpn_edgevit-xxs': os.path.join(ROOT, 'configs', 'segmentation', 'fpn_edgevit-xxs_8xb4-40k_ade20k-512x512.py'),
    'edgevit-xxs_in1k': os.path.join(ROOT, 'configs', 'classification', 'edgevit-xxs_8xb256-300e_in1k.py'),
}


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--models', nargs='+', choices=list(MODELS), default=list(MODELS),
                        help='which models (default: all four)')
    parser.add_argument('--iters', type=positive_int, default=50, help='training iterations per model (default: 50)')
    parser.add_argument('--size', type=positive_int, default=512, help='image side in pixels (default: 512)')
    parser.add_argument('--batch-size', type=positive_int,
                        help="images per iteration (default: the config's own, 2 for detection, 4 for segmentation; "
                             "32 for classification)")
    parser.add_argument('--no-amp', dest='amp', action='store_false', help='train in float32 on the GPU too')
    parser.add_argument('--workers', type=int, default=2, help='data loading processes per model (default: 2)')
    parser.add_argument('--work-dir', default='work_dirs/gpu_smoke', help='dataset and logs (default: work_dirs/gpu_smoke)')
    parser.add_argument('--results-dir', default=os.path.join(ROOT, 'tools', 'results'),
                        help='where gpu_smoke.md / .json are written (default: tools/results)')
    add_debug_argument(parser)
    args = parser.parse_args(argv)
    if args.size < 64:
        parser.error(f'--size {args.size}: give at least 64 pixels')
    if args.workers < 0:
        parser.error(f'--workers {args.workers}: give 0 (load in the main process) or more')
    return args


def main(argv=None) -> int:
    """The command line; errors end as one line (``run_tool``)."""
    return run_tool(_main, argv)


def _main(argv) -> int:
    quiet_third_party_warnings()
    args = parse_args(argv)
    import torch

    from backbones.benchmark.results import machine_description, provenance, write_results
    from backbones.demo.gpu_smoke import format_smoke, mmcv_build, run_smoke, smoke_data
    from backbones.runtime.cli import check_writable_dir
    for flag, path in (('--work-dir', args.work_dir), ('--results-dir', args.results_dir)):
        check_writable_dir(path, flag)
    machine = machine_description()
    if torch.cuda.is_available():
        machine = f'{torch.cuda.get_device_name()} (CUDA {torch.version.cuda}), {machine}'
    header = provenance(machine, ['tools/gpu_smoke.py'] + list(sys.argv[1:] if argv is None else argv))
    log = lambda line: print(line, flush=True)  # noqa: E731
    results = run_smoke([(name, MODELS[name]) for name in args.models], args.work_dir, iters=args.iters,
                        size=args.size, batch_size=args.batch_size, amp=args.amp, workers=args.workers, log=log)
    table = format_smoke(results)
    note = f'{mmcv_build()}; built-in dataset at {args.size}x{args.size}.'
    if not torch.cuda.is_available():
        note += ' No CUDA device: trained on the CPU in float32, a check of the script, not a GPU measurement.'
    written = write_results(os.path.join(args.results_dir, 'gpu_smoke'), header, f'{table}\n\n{note}',
                            smoke_data(results))
    print(f'{table}\n\n{note}\nwritten: {", ".join(written)}')
    return 0 if all(r.ok for r in results) else EXIT_FAILED


if __name__ == '__main__':
    sys.exit(main())
