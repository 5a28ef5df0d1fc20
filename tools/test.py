#!/usr/bin/env python
"""Evaluate a trained detector, segmentor or classifier (mmdet COCO metric / mmseg mIoU /
mmpretrain top-1 and top-5).

    python tools/test.py CONFIG CHECKPOINT [--out results.pkl] [--show-dir vis/]
    bash tools/dist_test.sh CONFIG CHECKPOINT 8
"""
import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from backbones.runtime.cli import add_runner_arguments, parse_runner_args, run_tool  # noqa: E402
from backbones.runtime.engine import prepare_test_config, test  # noqa: E402


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('config', help='test config file')
    parser.add_argument('checkpoint', help='checkpoint to evaluate (ours, or an official one: see README)')
    add_runner_arguments(parser, 'metrics')
    parser.add_argument('--out', help='also dump the raw predictions to this .pkl file')
    parser.add_argument('--show-dir', help='write images with the predictions drawn to this folder')
    parser.add_argument('--partial', action='store_true',
                        help='load a checkpoint that does not fit the model completely (default: refuse it); '
                             'lists the weights that keep their initialisation')
    return parse_runner_args(parser, argv)


def test_from_args(args) -> int:
    """Evaluate as the parsed command line says."""
    cfg = prepare_test_config(args.config, args.checkpoint, work_dir=args.work_dir,
                              cfg_options=args.cfg_options, launcher=args.launcher, out=args.out,
                              show_dir=args.show_dir)
    test(cfg, partial=args.partial)
    return 0


def main(argv=None) -> int:
    """The command line; errors end as one line (``run_tool``)."""
    return run_tool(lambda argv: test_from_args(parse_args(argv)), argv)


if __name__ == '__main__':
    sys.exit(main())
