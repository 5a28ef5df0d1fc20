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
all cores (default: EfficientFormerV2-S0 and EdgeViT-XXS at 224, beside MobileNetV2 x1.0;
about 10 minutes on 2 cores) and writes them to tools/results/profile_HxW.{md,json}:

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
"""
import argparse
import os
import sys
from dataclasses import asdict

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


CONFIGS = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), 'configs')
#: --end-to-end without models: (config, size)
END_TO_END_DEFAULTS = (
    ('detection/retinanet_edgevit-xxs_fpn_8xb2-1x_coco.py', (640, 640)),
    ('detection/retinanet_efficientformerv2-s0_fpn_8xb2-1x_coco.py', (640, 640)),
    ('detection/mask-rcnn_efficientformerv2-s0_fpn_8xb2-1x_coco.py', (640, 640)),
    ('segmentation/fpn_edgevit-xxs_8xb4-40k_ade20k-512x512.py', (512, 512)),
    ('segmentation/fpn_efficientformerv2-s0_8xb4-40k_ade20k-512x512.py', (512, 512)),
)


def end_to_end_main(args, machine) -> int:
    from backbones.export.benchmark import format_end_to_end_table, run_end_to_end_benchmark
    from backbones.fileio import write_json, write_text
    if args.models:
        jobs = [(m, tuple(args.size) if args.size else (640, 640)) for m in args.models]
    else:
        jobs = [(os.path.join(CONFIGS, c), tuple(args.size) if args.size else size) for c, size in END_TO_END_DEFAULTS]
    fmt = args.formats[0] if args.formats else 'executorch'
    threads = sorted(set(args.threads)) if args.threads else [1]
    timings = []
    for config, size in jobs:
        timings += run_end_to_end_benchmark([config], size, fmt, threads, args.seconds, args.out_dir,
                                            log=lambda s: print(s, flush=True), reuse=args.reuse,
                                            torch_threads=args.torch_threads, cfg_options=args.cfg_options)
    table = format_end_to_end_table(timings, machine)
    print('\n' + table)
    write_text(os.path.join(args.out_dir, 'end_to_end.md'), table + '\n')
    write_json(os.path.join(args.out_dir, 'end_to_end.json'),
               dict(machine=machine, timings=[dict(vars(t), post_ms=t.post_ms, post_share=t.post_share,
                                                   other_post_ms=t.other_post_ms,
                                                   other_post_share=t.other_post_share)
                                              for t in timings]), indent=2)
    return 0


#: --profile without models
PROFILE_DEFAULTS = ('efficientformerv2_s0', 'edgevit_xxs')
RESULTS = os.path.join(os.path.dirname(os.path.abspath(__file__)), 'results')


def profile_main(args, machine) -> int:
    import torch
    from backbones.export.benchmark import REFERENCE, baseline_target
    from backbones.export.profile import etdump_available, profile_json, profile_model, profile_report
    from backbones.export.targets import build_target, target_name
    from backbones.fileio import write_json, write_text
    size = tuple(args.size) if args.size else (224, 224)
    threads = sorted(set(args.threads)) if args.threads else sorted({1, os.cpu_count() or 1})
    names = list(dict.fromkeys([REFERENCE] + list(args.models or PROFILE_DEFAULTS)))
    workdir = os.path.join(args.out_dir, 'profile')
    etdump = etdump_available()
    print(f'ETDump events in this ExecuTorch build: {"yes" if etdump else "no (pip wheel without the event tracer)"}; '
          'profiling operator by operator', flush=True)
    x = torch.rand(1, 3, *size, generator=torch.Generator().manual_seed(0))
    profiles = []
    for name in names:
        target = baseline_target(name, size) if name == REFERENCE else build_target(name, size)
        profiles.append(profile_model(target_name(name), target.module, x, threads,
                                      os.path.join(workdir, target_name(name)), seconds_each=args.seconds / 100,
                                      whole_seconds=args.seconds, log=lambda s: print(s, flush=True)))
    report = profile_report(profiles, threads, machine, REFERENCE, etdump)
    print('\n' + report)
    stem = os.path.join(args.results_dir, f'profile_{size[0]}x{size[1]}')
    write_text(stem + '.md', report + '\n')
    write_json(stem + '.json', profile_json(profiles, machine, etdump), indent=2)
    print(f'written: {stem}.md, {stem}.json')
    return 0


def onnx_profile_main(args, machine) -> int:
    from backbones.export.onnx_profile import format_onnx_profile, onnx_profile_json, profile_onnx
    from backbones.fileio import write_json, write_text
    for path in args.profile_onnx:
        if not path.endswith('.onnx') or not os.path.isfile(path):
            print(f'error: --profile-onnx {path}: not an .onnx file; export one with tools/export.py '
                  '--formats onnx (or the main job)', file=sys.stderr)
            return 2
    names = [os.path.splitext(os.path.basename(path))[0] for path in args.profile_onnx]
    if len(set(names)) < len(names):  # one file name in several folders: name each report by its folder too
        names = [f'{os.path.basename(os.path.dirname(os.path.abspath(path)))}_{name}'
                 for path, name in zip(args.profile_onnx, names)]
        if len(set(names)) < len(names):
            print('error: --profile-onnx: two files share a name and a folder name, so their reports would '
                  'overwrite each other; profile them one at a time with separate --results-dir', file=sys.stderr)
            return 2
    threads = args.threads[0] if args.threads else None
    for path, name in zip(args.profile_onnx, names):
        profile = profile_onnx(path, runs=args.runs, threads=threads)
        report = format_onnx_profile(profile, machine=f'{threads or "default"} threads; {machine}')
        print('\n' + report)
        stem = os.path.join(args.results_dir, 'onnx_profile_' + name)
        write_text(stem + '.md', report + '\n')
        write_json(stem + '.json', onnx_profile_json(profile), indent=2)
        print(f'written: {stem}.md, {stem}.json')
    return 0


def main(argv=None) -> int:
    from backbones.export.benchmark import (eager_comparison, format_eager_table, format_table, machine_description,
                                            plot, run_benchmark, timed_formats)
    from backbones.fileio import write_json, write_text
    from backbones.registry import variant_names
    from backbones.runtime.cli import positive_int, quiet_third_party_warnings
    from mmengine.config import DictAction
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('models', nargs='*', help='backbone names or config files (default: every registered backbone)')
    parser.add_argument('--size', type=int, nargs=2, metavar=('H', 'W'),
                        help='input height and width (default: 224 224; --end-to-end: 640 640 for detectors, '
                             '512 512 for segmentors)')
    parser.add_argument('--formats', nargs='+', choices=timed_formats(),
                        help='default: executorch executorch-int8 onnx (--end-to-end: executorch)')
    parser.add_argument('--threads', type=int, nargs='+',
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
                             "default, all cores, as before: its OpenMP workers, woken by the ExecuTorch bindings' "
                             "output clones, then compete with XNNPACK's threads)")
    parser.add_argument('--clone-outputs', action='store_true',
                        help="time ExecuTorch with its Python bindings' output clones (with --torch-threads 0: "
                             'as this benchmark timed before; default: outputs read in place, as an app does)')
    parser.add_argument('--cfg-options', nargs='+', action=DictAction, metavar='KEY=VALUE',
                        help='--end-to-end: override settings of every config, e.g. model.test_cfg.rpn.max_per_img=300 '
                             '(the models are named with them)')
    parser.add_argument('--out-dir', default='work_dirs/benchmark')
    args = parser.parse_args(argv)
    if args.cfg_options and not args.end_to_end:
        parser.error('--cfg-options applies to --end-to-end (config files); backbones take none')
    quiet_third_party_warnings()
    machine = machine_description()
    if args.end_to_end:
        return end_to_end_main(args, machine)
    if args.profile:
        return profile_main(args, machine)
    if args.profile_onnx:
        return onnx_profile_main(args, machine)
    args.size = args.size or (224, 224)
    args.formats = args.formats or ['executorch', 'executorch-int8', 'onnx']
    args.threads = args.threads or [1, os.cpu_count() or 1]
    timings = run_benchmark(args.models or variant_names(), tuple(args.size), args.formats,
                            sorted(set(args.threads)), args.seconds, args.out_dir,
                            log=lambda s: print(s, flush=True), reuse=args.reuse, torch_threads=args.torch_threads,
                            clone_outputs=args.clone_outputs)
    table = format_table(timings, machine)
    eager = []
    if tuple(args.size) == (224, 224) and not args.no_eager:
        eager = eager_comparison(seconds=args.seconds, log=lambda s: print(s, flush=True))
        table += '\n\n' + format_eager_table(eager, machine)
    print('\n' + table)
    write_text(os.path.join(args.out_dir, 'benchmark.md'), table + '\n')
    write_json(os.path.join(args.out_dir, 'benchmark.json'),
               dict(machine=machine, size=args.size, timings=[asdict(t) for t in timings],
                    eager=[asdict(t) for t in eager]), indent=2)
    if tuple(args.size) == (224, 224):
        png = plot(timings, args.formats[0], 1, os.path.join(args.out_dir, 'top1_vs_latency.png'), machine)
        print(f'plot: {png}')
    return 0


if __name__ == '__main__':
    sys.exit(main())
