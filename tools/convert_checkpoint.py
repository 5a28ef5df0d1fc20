#!/usr/bin/env python
"""Convert an EdgeViT / EfficientFormerV2 checkpoint to the edgeformers layout.

Accepts, auto-detected: the official EdgeViT layout (saic-fi/edgevit), the official
EfficientFormerV2 classification and dense layouts (snap-research/EfficientFormer, with or
without their index buffers), timm's efficientformerv2_* layout, EasyCV's EdgeViT classifier,
classifiers trained with configs/classification/ (mmpretrain), and ours (unchanged). A
whole detector / segmentor checkpoint (official mmdet 2.x / mmseg 0.x downstream models)
has its backbone part converted and everything else kept, so the result works with
``load_from`` or ``tools/test.py``. --backbone-only keeps the backbone's weights alone.

    python tools/convert_checkpoint.py efficientformerv2_s0.pth s0_edgeformers.pth
    python tools/convert_checkpoint.py work_dirs/edgevit-xs_8xb256-300e_in1k/epoch_300.pth edgevit_xs.pth --backbone-only
"""
import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from backbones.checkpoints.loading import convert_checkpoint_file  # noqa: E402
from backbones.runtime.cli import add_debug_argument, quiet_third_party_warnings, run_tool  # noqa: E402


def main(argv=None) -> int:
    """The command line; errors end as one line (``run_tool``)."""
    return run_tool(_main, argv)


def _main(argv) -> int:
    quiet_third_party_warnings()
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('src', help='checkpoint to convert (.pth / .pt)')
    parser.add_argument('dst', help='where to write the converted checkpoint')
    parser.add_argument('--prefix', default='backbone.',
                        help="prefix of the backbone keys in a whole-model checkpoint (default: 'backbone.')")
    parser.add_argument('--backbone-only', action='store_true',
                        help="write only the backbone's weights (of a classifier or a whole model), for a config's "
                             "init_cfg=dict(type='Pretrained', checkpoint=DST)")
    parser.add_argument('--force', action='store_true', help='replace dst if it is an earlier converted file')
    add_debug_argument(parser)
    args = parser.parse_args(argv)
    if not os.path.isfile(args.src):
        parser.error(f'{args.src}: no such checkpoint file')
    # the same file under another name (a symlink or hard link to src, or a path to one) counts too
    if os.path.abspath(args.src) == os.path.abspath(args.dst) or (
            os.path.exists(args.dst) and os.path.samefile(args.src, args.dst)):
        parser.error(f'{args.dst} is {args.src} itself (the same file, maybe through a link): the source is never '
                     'overwritten; choose another dst')
    if os.path.isdir(args.dst):
        parser.error(f'{args.dst} is a folder: give the converted file\'s path, e.g. {os.path.join(args.dst, "model.pth")} '
                     '(a folder is never replaced)')
    if os.path.lexists(args.dst) and not args.force:
        parser.error(f'{args.dst} exists; pass --force to overwrite it')
    # written to a temporary file renamed into place: an interrupted run leaves dst as it was
    report = convert_checkpoint_file(args.src, args.dst, prefix=args.prefix, backbone_only=args.backbone_only)
    print(f'{args.src}: layout {report["layout"]}, {report["num_tensors"]} '
          f'{"backbone " if args.backbone_only else ""}tensors; '
          f'looks like {report["family"]}(arch={report["arch"]!r}) ({report["match"]:.0%} of the tensors match)')
    print(f'wrote {args.dst}')
    return 0


if __name__ == '__main__':
    sys.exit(main())
