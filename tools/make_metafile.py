#!/usr/bin/env python
"""Write metafile.yml (the OpenMMLab model-index format) for every config: measured
parameters and FLOPs at the papers' input sizes, and the papers' published results."""
import argparse
import os
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from backbones.analysis.complexity import all_configs, model_complexity  # noqa: E402
from backbones.analysis.metafile import metafile  # noqa: E402
from backbones.fileio import write_text  # noqa: E402
from backbones.runtime.cli import add_debug_argument, quiet_third_party_warnings, run_tool  # noqa: E402


def main(argv=None) -> int:
    """The command line; errors end as one line (``run_tool``)."""
    return run_tool(_main, argv)


def _main(argv) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument('--out', default=os.path.join(ROOT, 'metafile.yml'), help='default: metafile.yml')
    add_debug_argument(parser)
    args = parser.parse_args(argv)
    quiet_third_party_warnings()
    rows = []
    for path in all_configs([os.path.join(ROOT, 'configs', t) for t in ('detection', 'segmentation')]):
        rows.append((path, model_complexity(path)))
        print(f'measured {os.path.basename(path)}', flush=True)
    write_text(args.out, metafile(rows))
    print(f'wrote {args.out}')
    return 0


if __name__ == '__main__':
    sys.exit(main())
