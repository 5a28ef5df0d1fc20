#!/usr/bin/env python
"""Train a detector, segmentor or ImageNet classifier from an mmdet / mmseg / mmpretrain config
(mmengine Runner).

    python tools/train.py configs/detection/mask-rcnn_efficientformerv2-s0_fpn_8xb2-1x_coco.py
    python tools/train.py configs/classification/edgevit-xxs_8xb256-300e_in1k.py --auto-scale-lr
    bash tools/dist_train.sh CONFIG 8            # 8 GPUs (torchrun)
"""
import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from backbones.runtime.cli import add_runner_arguments, parse_runner_args, run_tool  # noqa: E402
from backbones.runtime.engine import prepare_train_config, train  # noqa: E402


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('config', help='train config file')
    add_runner_arguments(parser, 'checkpoints')
    parser.add_argument('--resume', nargs='?', const='auto', metavar='CHECKPOINT',
                        help='resume from CHECKPOINT, or without one from the latest checkpoint in the work dir')
    parser.add_argument('--amp', action='store_true',
                        help='mixed precision: float16 autocast with a dynamic loss scale, the optim wrapper X '
                             'becoming its twin AmpX (needs a CUDA GPU)')
    parser.add_argument('--auto-scale-lr', action='store_true',
                        help="scale the lr linearly from the config's total batch (auto_scale_lr.base_batch_size, "
                             'the batch in its name) to the real one (GPUs x batch per GPU)')
    return parse_runner_args(parser, argv)


def train_from_args(args) -> int:
    """Train as the parsed command line says."""
    cfg = prepare_train_config(args.config, work_dir=args.work_dir, cfg_options=args.cfg_options,
                               launcher=args.launcher, resume=args.resume, amp=args.amp,
                               auto_scale_lr=args.auto_scale_lr)
    train(cfg)
    return 0


def main(argv=None) -> int:
    """The command line; errors end as one line (``run_tool``)."""
    return run_tool(lambda argv: train_from_args(parse_args(argv)), argv)


if __name__ == '__main__':
    sys.exit(main())
