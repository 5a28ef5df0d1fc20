#!/usr/bin/env python
"""Print parameters and GMACs of every classification model at 224 beside the papers' figures."""
import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from backbones.analysis.complexity import format_imagenet_table, imagenet_table  # noqa: E402
from backbones.registry import variant_names  # noqa: E402
from backbones.runtime.cli import add_debug_argument, quiet_third_party_warnings, run_tool  # noqa: E402


def main(argv=None) -> int:
    """The command line; errors end as one line (``run_tool``)."""
    return run_tool(_main, argv)


def _main(argv) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    names = variant_names()
    parser.add_argument('models', nargs='*', choices=[[]] + sorted(names), metavar='MODEL',
                        help=f'models to count (default: all of {", ".join(names)})')
    add_debug_argument(parser)
    args = parser.parse_args(argv)
    quiet_third_party_warnings()
    rows = imagenet_table(args.models or None)
    print(format_imagenet_table(rows))
    return 0 if all(r['params_ok'] and r['gmacs_ok'] for r in rows) else 1


if __name__ == '__main__':
    sys.exit(main())
