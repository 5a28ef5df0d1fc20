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
import warnings

warnings.filterwarnings('ignore')  # mmengine / mmdet deprecation notes while tracing
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from backbones.flops import PAPER_MODELS, all_configs, backbone_label, config_name, model_complexity  # noqa: E402


def _row(path, shape):
    c = model_complexity(path, shape)
    paper = PAPER_MODELS.get(config_name(path), {})
    return c, paper


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('config', nargs='?', help='config file (omit with --table)')
    parser.add_argument('--shape', type=int, nargs=2, metavar=('H', 'W'),
                        help="input size (default: the paper's, 800 1280 detection, 512 512 segmentation)")
    parser.add_argument('--table', action='store_true', help='every config in configs/, beside the papers')
    parser.add_argument('--markdown', action='store_true', help='print the table as Markdown (README)')
    args = parser.parse_args(argv)
    if not args.table and not args.config:
        parser.error('give a CONFIG, or --table for all configs')
    if args.config and not os.path.isfile(args.config):
        parser.error(f'{args.config}: no such config file')
    if not args.table:
        c, paper = _row(args.config, args.shape)
        print(f'{config_name(args.config)} at {c["height"]}x{c["width"]}:')
        print(f'  params {c["params"]:.2f} M (backbone {c["backbone_params"]:.2f} M)'
              + (f'; paper {paper["params"]} M' if 'params' in paper else ''))
        print(f'  GFLOPs {c["gflops"]:.1f} (backbone {c["backbone_gflops"]:.1f})'
              + (f'; paper {paper["gflops"]}' if 'gflops' in paper else ''))
        return 0
    rows = []
    for path in all_configs(ROOT):
        c, paper = _row(path, args.shape)
        rows.append((path, c, paper))
        if not args.markdown:
            print(f'{config_name(path):<52} {c["params"]:>7.2f}M {c["gflops"]:>8.1f}G  '
                  f'paper: {paper.get("params", "-"):>5}M {paper.get("gflops", "-"):>5}G  '
                  f'AP {paper.get("box_ap", "-")} mask {paper.get("mask_ap", "-")} mIoU {paper.get("miou", "-")}',
                  flush=True)
    if args.markdown:
        print('| config | backbone | params (M) | paper | GFLOPs | paper | paper box AP | mask AP | mIoU |')
        print('|---|---|---|---|---|---|---|---|---|')
        for path, c, p in rows:
            print(f'| `{config_name(path)}` | {backbone_label(path)} | {c["params"]:.1f} | {p.get("params", "—")} | '
                  f'{c["gflops"]:.1f} | {p.get("gflops", "—")} | {p.get("box_ap", "—")} | {p.get("mask_ap", "—")} | '
                  f'{p.get("miou", "—")} |')
    return 0


if __name__ == '__main__':
    sys.exit(main())
