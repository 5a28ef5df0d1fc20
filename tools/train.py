#!/usr/bin/env python
"""Train a detector or segmentor from an mmdet / mmseg config (mmengine Runner).

    python tools/train.py configs/detection/mask-rcnn_efficientformerv2-s0_fpn_8xb2-1x_coco.py
    bash tools/dist_train.sh CONFIG 8            # 8 GPUs (torchrun)
"""
import argparse
import os
import sys
import warnings

warnings.filterwarnings('ignore', message='pkg_resources is deprecated')
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from mmengine.config import DictAction  # noqa: E402

from backbones.engine import prepare_train_config, setup_launcher_env, train  # noqa: E402


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('config', help='train config file')
    parser.add_argument('--work-dir', help='where logs and checkpoints go (default: work_dirs/<config name>)')
    parser.add_argument('--resume', nargs='?', const='auto', metavar='CHECKPOINT',
                        help='resume from CHECKPOINT, or without one from the latest checkpoint in the work dir')
    parser.add_argument('--amp', action='store_true', help='automatic mixed precision (needs a GPU)')
    scale = parser.add_mutually_exclusive_group()
    scale.add_argument('--auto-scale-lr', dest='auto_scale_lr', action='store_const', const=True,
                       help='scale the lr linearly with the total batch (the configs do by default)')
    scale.add_argument('--no-auto-scale-lr', dest='auto_scale_lr', action='store_const', const=False,
                       help="keep the config's lr whatever the total batch")
    parser.add_argument('--cfg-options', nargs='+', action=DictAction,
                        help='override config settings, key=value (e.g. train_cfg.max_epochs=1)')
    parser.add_argument('--launcher', choices=['none', 'pytorch', 'slurm', 'mpi'], default='none',
                        help='job launcher (pytorch for torchrun, slurm for srun)')
    parser.add_argument('--local_rank', '--local-rank', type=int, default=0)
    return parser.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    setup_launcher_env(args.local_rank)
    cfg = prepare_train_config(args.config, work_dir=args.work_dir, cfg_options=args.cfg_options,
                               launcher=args.launcher, resume=args.resume, amp=args.amp,
                               auto_scale_lr=args.auto_scale_lr)
    train(cfg)
    return 0


if __name__ == '__main__':
    sys.exit(main())
