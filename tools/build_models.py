#!/usr/bin/env python
"""Build a RetinaNet (mmdet, COCO 1x recipe) around each backbone and print its parameter
count and the backbone / FPN output shapes for one image."""
import argparse
import os
import sys
import warnings

# mmengine's config loader imports the deprecated pkg_resources; not actionable here
warnings.filterwarnings('ignore', message='pkg_resources is deprecated')
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from backbones.detectors import BACKBONE_CFGS, describe_retinanets  # noqa: E402


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument('backbones', nargs='*', metavar='BACKBONE',
                        help=f'any of {", ".join(BACKBONE_CFGS)} (default: all)')
    parser.add_argument('--size', type=int, nargs=2, default=(512, 512), metavar=('H', 'W'),
                        help='input height and width (default: 512 512)')
    args = parser.parse_args(argv)
    unknown = [b for b in args.backbones if b not in BACKBONE_CFGS]
    if unknown:
        parser.error(f'unknown backbone(s) {unknown}; choose from {list(BACKBONE_CFGS)}')
    names = args.backbones or list(BACKBONE_CFGS)
    print(f'RetinaNet with each backbone, input 1x3x{args.size[0]}x{args.size[1]}', flush=True)
    for row in describe_retinanets(names, *args.size):
        print(f'\n{row["name"]}: RetinaNet {row["params"]:.2f}M params (backbone {row["backbone_params"]:.2f}M)')
        print('  backbone (C, H, W):', '  '.join(str(s) for s in row['backbone']))
        print('  FPN      (C, H, W):', '  '.join(str(s) for s in row['fpn']), flush=True)
    return 0


if __name__ == '__main__':
    sys.exit(main())
