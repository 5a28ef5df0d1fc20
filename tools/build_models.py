#!/usr/bin/env python
"""Build a RetinaNet (mmdet, COCO 1x recipe) around each backbone and print its parameter
count and the backbone / FPN output shapes for one image."""
import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from backbones.analysis.complexity import describe_retinanets  # noqa: E402
from backbones.registry import variant_names  # noqa: E402
from backbones.runtime.cli import (add_debug_argument, add_size_argument, quiet_third_party_warnings,  # noqa: E402
                                   run_tool)


def main(argv=None) -> int:
    """The command line; errors end as one line (``run_tool``)."""
    return run_tool(_main, argv)


def _main(argv) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument('backbones', nargs='*', metavar='BACKBONE',
                        help=f'any of {", ".join(variant_names())} (default: all)')
    add_size_argument(parser, (512, 512))
    add_debug_argument(parser)
    args = parser.parse_args(argv)
    quiet_third_party_warnings()
    unknown = [b for b in args.backbones if b not in variant_names()]
    if unknown:
        parser.error(f'unknown backbone(s) {unknown}; choose from {variant_names()}')
    names = args.backbones or variant_names()
    print(f'RetinaNet with each backbone, input 1x3x{args.size[0]}x{args.size[1]}', flush=True)
    for row in describe_retinanets(names, *args.size):
        print(f'\n{row["name"]}: RetinaNet {row["params"]:.2f}M params (backbone {row["backbone_params"]:.2f}M)')
        print('  backbone (C, H, W):', '  '.join(str(s) for s in row['backbone']))
        print('  FPN      (C, H, W):', '  '.join(str(s) for s in row['fpn']), flush=True)
    return 0


if __name__ == '__main__':
    sys.exit(main())
