#!/usr/bin/env python
"""Latency of exported backbones and segmentors beside MobileNetV2 x1.0 / x1.4 and ResNet-18,
exported and timed the same way in the same run (ExecuTorch XNNPACK fp32 / int8, onnxruntime),
at 1 thread and at all cores. Prints median / p90 and the ratio to MobileNetV2 x1.0, writes a
Markdown table, a JSON file and a plot of ImageNet top-1 against latency.

    python tools/benchmark.py                               # all seven backbones at 224
    python tools/benchmark.py efficientformerv2_s0 edgevit_xxs --formats executorch --seconds 5
    python tools/benchmark.py configs/segmentation/fpn_edgevit-xxs_8xb4-40k_ade20k-512x512.py --size 512 512

At 224 it also times eager PyTorch forwards of our EfficientFormerV2 beside timm's (batch 8,
all cores; --no-eager skips it).

--profile records per-operator profiles of ExecuTorch XNNPACK fp32 exports at 1 thread and
all cores (default: EfficientFormerV2-S0 and EdgeViT-XXS at 224, beside MobileNetV2 x1.0)
and writes them to tools/results/profile_HxW.{md,json}:

    python tools/benchmark.py --profile
    python tools/benchmark.py --profile configs/segmentation/fpn_edgevit-xxs_8xb4-40k_ade20k-512x512.py --size 512 512

--profile-onnx profiles any ONNX export with ONNX Runtime's own profiler (time by operator
type, the slowest nodes with their input shapes), end-to-end detectors included, and writes
tools/results/onnx_profile_NAME.{md,json}:

    python tools/benchmark.py --profile-onnx work_dirs/demo/detection/export/config_192x192.onnx

--end-to-end times detector / segmentor configs exported end to end (uint8 image in; decoding
and NMS, or the argmax, in the graph) beside their raw networks, and reports what the
post-processing costs and what each export adds to a fresh process's peak memory. Without
models it takes RetinaNet at 640x640 and Semantic FPN at 512x512 for EdgeViT-XXS and
EfficientFormerV2-S0, and Mask R-CNN EfficientFormerV2-S0 at 640x640 (ExecuTorch fp32, 1
thread):

    python tools/benchmark.py --end-to-end

--cfg-options key=value ... overrides the configs' settings there (as mmdet's tools do), e.g.
Mask R-CNN with fewer proposals and detection slots:

    python tools/benchmark.py --end-to-end configs/detection/mask-rcnn_efficientformerv2-s0_fpn_8xb2-1x_coco.py \\
        --cfg-options model.test_cfg.rpn.max_per_img=300 model.test_cfg.rcnn.max_per_img=20

Every file written starts with the command, the date and the machine.
"""
import argparse
import os
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
sys.path.insert(0, os.path.join(ROOT, 'tools'))

CONFIGS = os.path.join(ROOT, 'configs')
RESULTS = os.path.join(ROOT, 'tools', 'results')
#: --end-to-end without models: (config, size)
END_TO_END_DEFAULTS = (
    ('detection/retinanet_edgevit-xxs_fpn_8xb2-1x_coco.py', (640, 640)),
    ('detection/retinanet_efficientformerv2-s0_fpn_8xb2-1x_coco.py', (640, 640)),
    ('detection/mask-rcnn_efficientformerv2-s0_fpn_8xb2-1x_coco.py', (640, 640)),
    ('segmentation/fpn_edgevit-xxs_8xb4-40k_ade20k-512x512.py', (512, 512)),
    ('segmentation/fpn_efficientformerv2-s0_8xb4-40k_ade20k-512x512.py', (512, 512)),
)
#: --profile without models
PROFILE_DEFAULTS = ('efficientformerv2_s0', 'edgevit_xxs')


def parse_args(argv=None):
    from _torchfree import load_cfg_options, load_runner
    positive_int = load_runner().positive_int
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('models', nargs='*', help='backbone names or config files (default: every registered backbone)')
    parser.add_argument('--size', type=positive_int, nargs=2, metavar=('H', 'W'),
                        help='input height and width (default: 224 224; --end-to-end: 640 640 for detectors, '
                             '512 512 for segmentors)')
    parser.add_argument('--formats', nargs='+', choices=('executorch', 'executorch-int8', 'onnx'),
                        help='default: executorch executorch-int8 onnx (--end-to-end: executorch)')
    parser.add_argument('--threads', type=positive_int, nargs='+',
                        help='default: 1 and all cores (--end-to-end: 1)')
    parser.add_argument('--profile', action='store_true',
                        help='per-operator profiles (ExecuTorch XNNPACK fp32) beside MobileNetV2, written to '
                             'RESULTS_DIR/profile_HxW.{md,json}')
    parser.add_argument('--profile-onnx', nargs='+', metavar='ONNX',
                        help='profile these ONNX exports (any model, end-to-end detectors included) with ONNX '
                             "Runtime's profiler: time by operator type and the slowest nodes, written to "
                             'RESULTS_DIR/onnx_profile_NAME.{md,json}; --threads: its first value (default: the '
                             "runtime's)")
    parser.add_argument('--runs', type=positive_int, default=5,
                        help='--profile-onnx: runs counted after 2 warm-up runs (default 5)')
    parser.add_argument('--results-dir', default=RESULTS,
                        help='where --profile and --profile-onnx write (default: tools/results)')
    parser.add_argument('--end-to-end', action='store_true',
                        help='time detector / segmentor configs end to end beside their raw networks')
    parser.add_argument('--seconds', type=float, default=3.0,
                        help='timing window per model (default 3 s; --profile: per whole model, 1/100 of it per operator)')
    parser.add_argument('--reuse', action='store_true',
                        help='time the exports already under OUT_DIR/models again instead of exporting anew')
    parser.add_argument('--no-eager', action='store_true', help='skip the eager comparison with timm')
    parser.add_argument('--torch-threads', type=int, default=1,
                        help="PyTorch's intra-op threads while runtimes are timed (default 1; 0 keeps PyTorch's "
                             "default, all cores, whose OpenMP workers, woken by the ExecuTorch bindings' output "
                             "clones, compete with XNNPACK's threads)")
    parser.add_argument('--clone-outputs', action='store_true',
                        help="time ExecuTorch with its Python bindings' output clones (default: outputs read in "
                             'place, as an app does)')
    load_cfg_options().add_cfg_options_argument(
        parser, '--end-to-end: override settings of every config, e.g. model.test_cfg.rpn.max_per_img=300 (the '
                'models are named with them)')
    parser.add_argument('--out-dir', default='work_dirs/benchmark')
    parser.add_argument('--debug', action='store_true', help='on an error, show its traceback (also EDGEFORMERS_DEBUG=1)')
    args = parser.parse_args(argv)
    if args.cfg_options and not args.end_to_end:
        parser.error('--cfg-options applies to --end-to-end (config files); backbones take none')
    if not 0 < args.seconds < float('inf'):
        parser.error(f'--seconds {args.seconds}: the timing window must be a positive number, e.g. --seconds 3')
    if args.torch_threads < 0:
        parser.error(f'--torch-threads {args.torch_threads}: give 0 (PyTorch\'s default) or a thread count')
    return args


def main(argv=None) -> int:
    args = parse_args(argv)
    from backbones.runtime.cli import run_tool
    return run_tool(lambda _: benchmark(args, argv), sys.argv[1:] if argv is None else argv)


def benchmark(args, argv) -> int:
    from backbones.benchmark.results import machine_description, provenance
    from backbones.runtime.cli import quiet_third_party_warnings
    quiet_third_party_warnings()
    machine = machine_description()
    header = provenance(machine, ['tools/benchmark.py'] + list(sys.argv[1:] if argv is None else argv))
    log = lambda line: print(line, flush=True)  # noqa: E731
    threads = sorted(set(args.threads or []))
    if args.end_to_end:
        from backbones.benchmark.end_to_end import benchmark_configs
        jobs = ([(m, tuple(args.size or (640, 640))) for m in args.models] if args.models else
                [(os.path.join(CONFIGS, c), tuple(args.size or size)) for c, size in END_TO_END_DEFAULTS])
        table = benchmark_configs(jobs, (args.formats or ['executorch'])[0], threads or [1], args.seconds,
                                  args.out_dir, header, log=log, reuse=args.reuse, torch_threads=args.torch_threads,
                                  cfg_options=args.cfg_options)
    elif args.profile:
        from backbones.benchmark.operators import profile_models
        table = profile_models(args.models or PROFILE_DEFAULTS, tuple(args.size or (224, 224)),
                               threads or sorted({1, os.cpu_count() or 1}), args.seconds, args.out_dir,
                               args.results_dir, header, log=log)
    elif args.profile_onnx:
        from backbones.benchmark.onnx_profile import profile_files
        profile_files(args.profile_onnx, args.results_dir, header, runs=args.runs,
                      threads=threads[0] if threads else None, log=log)
        return 0
    else:
        from backbones.benchmark.latency import benchmark_backbones
        from backbones.registry import variant_names
        formats = args.formats or ['executorch', 'executorch-int8', 'onnx']
        table = benchmark_backbones(args.models or variant_names(), tuple(args.size or (224, 224)), formats,
                                    threads or [1, os.cpu_count() or 1], args.seconds, args.out_dir, header, machine,
                                    log=log, reuse=args.reuse, torch_threads=args.torch_threads,
                                    clone_outputs=args.clone_outputs, eager=not args.no_eager)
    print('\n' + header + '\n\n' + table)
    return 0


if __name__ == '__main__':
    sys.exit(main())
