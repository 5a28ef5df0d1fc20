#!/usr/bin/env python
"""Parameters and GFLOPs of a detector / segmentor config at the paper's input size
(1280x800 detection, 512x512 segmentation), or of every config with --table, beside the
papers' figures. FLOPs: mmengine FlopAnalyzer, one multiply-add = 1 (as the papers count).

    python tools/get_flops.py configs/segmentation/fpn_edgevit-xxs_8xb4-40k_ade20k-512x512.py
    python tools/get_flops.py --table [--markdown]
"""
import argparse
import os
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from backbones.analysis.complexity import all_configs, complexity_rows, format_complexity_markdown  # noqa: E402
from backbones.runtime.cli import add_debug_argument, quiet_third_party_warnings, run_tool  # noqa: E402


def main(argv=None) -> int:
    """The command line; errors end as one line (``run_tool``)."""
    return run_tool(_main, argv)


def _main(argv) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('config', nargs='?', help='config file (omit with --table)')
    parser.add_argument('--shape', type=int, nargs=2, metavar=('H', 'W'),
                        help="input size (default: the paper's, 800 1280 detection, 512 512 segmentation)")
    parser.add_argument('--table', action='store_true', help='every config in configs/, beside the papers')
    parser.add_argument('--markdown', action='store_true', help='print the table as Markdown (README)')
    add_debug_argument(parser)
    args = parser.parse_args(argv)
    if not args.table and not args.config:
        parser.error('give a CONFIG, or --table for all configs')
    if args.config and not os.path.isfile(args.config):
        parser.error(f'{args.config}: no such config file')
    quiet_third_party_warnings()
    if not args.table:
        [r] = complexity_rows([args.config], args.shape)
        paper = r['paper']
        print(f'{r["name"]} at {r["height"]}x{r["width"]}:')
        print(f'  params {r["params"]:.2f} M (backbone {r["backbone_params"]:.2f} M)'
              + (f'; paper {paper["params"]} M' if 'params' in paper else ''))
        print(f'  GFLOPs {r["gflops"]:.1f} (backbone {r["backbone_gflops"]:.1f})'
              + (f'; paper {paper["gflops"]}' if 'gflops' in paper else ''))
        return 0
    log = None if args.markdown else (lambda line: print(line, flush=True))
    rows = complexity_rows(all_configs([os.path.join(ROOT, 'configs', t) for t in ('detection', 'segmentation')]), args.shape, log=log)
    if args.markdown:
        print(format_complexity_markdown(rows))
    return 0


if __name__ == '__main__':
    sys.exit(main())
