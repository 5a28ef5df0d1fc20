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
"""
import argparse
import os
import sys
from dataclasses import asdict

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def main(argv=None) -> int:
    from backbones.export.benchmark import (eager_comparison, format_eager_table, format_table, machine_description,
                                            plot, run_benchmark, timed_formats)
    from backbones.fileio import write_json, write_text
    from backbones.registry import variant_names
    from backbones.runtime.cli import add_size_argument, quiet_third_party_warnings
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('models', nargs='*', help='backbone names or config files (default: every registered backbone)')
    add_size_argument(parser, (224, 224))
    parser.add_argument('--formats', nargs='+', default=['executorch', 'executorch-int8', 'onnx'],
                        choices=timed_formats())
    parser.add_argument('--threads', type=int, nargs='+', default=[1, os.cpu_count() or 1])
    parser.add_argument('--seconds', type=float, default=3.0, help='timing window per model (default 3 s)')
    parser.add_argument('--reuse', action='store_true',
                        help='time the exports already under OUT_DIR/models again instead of exporting anew')
    parser.add_argument('--no-eager', action='store_true', help='skip the eager comparison with timm')
    parser.add_argument('--out-dir', default='work_dirs/benchmark')
    args = parser.parse_args(argv)
    quiet_third_party_warnings()
    machine = machine_description()
    timings = run_benchmark(args.models or variant_names(), tuple(args.size), args.formats,
                            sorted(set(args.threads)), args.seconds, args.out_dir,
                            log=lambda s: print(s, flush=True), reuse=args.reuse)
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
