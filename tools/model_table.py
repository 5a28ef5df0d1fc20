#!/usr/bin/env python
"""Print parameters and GMACs of every classification model at 224 beside the papers' figures."""
import argparse
import os
import sys
import warnings

# mmengine's config loader imports the deprecated pkg_resources; not actionable here
warnings.filterwarnings('ignore', message='pkg_resources is deprecated')
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from backbones.classifier import CLASSIFIERS  # noqa: E402
from backbones.zoo import imagenet_table  # noqa: E402


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument('models', nargs='*', choices=[[]] + sorted(CLASSIFIERS), metavar='MODEL',
                        help=f'models to count (default: all of {", ".join(CLASSIFIERS)})')
    args = parser.parse_args(argv)
    rows = imagenet_table(args.models or None)
    print(f'{"model":<22} {"params (M)":>10} {"paper":>6} {"GMACs":>7} {"paper":>6} {"top-1":>6}  agrees')
    for r in rows:
        ok = 'yes' if r['params_ok'] and r['gmacs_ok'] else 'NO'
        print(f'{r["model"]:<22} {r["params"]:>10.2f} {r["paper_params"]:>6} {r["gmacs"]:>7.3f} '
              f'{r["paper_gmacs"]:>6} {r["top1"]:>6}  {ok}')
    print('Counted with classifier at 224x224; MACs by mmengine FlopAnalyzer (a multiply-add = 1).')
    return 0 if all(r['params_ok'] and r['gmacs_ok'] for r in rows) else 1


if __name__ == '__main__':
    sys.exit(main())
