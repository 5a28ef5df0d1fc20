"""Pieces the command-line tools share: the warning policy and common arguments."""
from __future__ import annotations

import argparse
import os
import os.path as osp
import warnings
from typing import Sequence, Tuple

#: packages whose deprecation and user warnings the tools do not repeat to users; the
#: package's own warnings (module ``backbones``) always show
THIRD_PARTY = r'(torch|torchvision|mmengine|mmcv|mmdet|mmseg|timm|executorch|torchao|onnx|onnxscript|onnxruntime' \
              r'|coremltools|pkg_resources|setuptools|numpy|matplotlib)(\.|$)'


def quiet_third_party_warnings() -> None:
    """Hide warnings raised inside third-party packages (deprecations of their internals, tracer
    notes) without hiding ours."""
    warnings.filterwarnings('ignore', module=THIRD_PARTY)
    # mmengine's config loader imports the deprecated pkg_resources (hence setuptools < 81)
    warnings.filterwarnings('ignore', message='pkg_resources is deprecated')


def positive_int(text: str) -> int:
    """argparse type: an integer of 1 or more."""
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f'{text}: must be at least 1')
    return value


def size_pair(values: Sequence[int]) -> Tuple[int, int]:
    return int(values[0]), int(values[1])


def add_size_argument(parser: argparse.ArgumentParser, default: Tuple[int, int], flag: str = '--size',
                      help: str = 'input height and width') -> None:
    parser.add_argument(flag, type=int, nargs=2, default=default, metavar=('H', 'W'),
                        help=f'{help} (default: {default[0]} {default[1]})')


def add_runner_arguments(parser: argparse.ArgumentParser, what: str) -> None:
    """The flags tools/train.py and tools/test.py share with mmdet's tools."""
    from mmengine.config import DictAction
    parser.add_argument('--work-dir', help=f'where logs and {what} go (default: work_dirs/<config name>)')
    parser.add_argument('--cfg-options', nargs='+', action=DictAction,
                        help='override config settings, key=value (e.g. train_cfg.max_epochs=1)')
    parser.add_argument('--launcher', choices=['none', 'pytorch', 'slurm', 'mpi'], default='none',
                        help='job launcher (pytorch for torchrun, slurm for srun)')
    parser.add_argument('--local_rank', '--local-rank', type=int, default=0)


def check_writable_dir(path: str, flag: str) -> None:
    """Create ``path`` if needed and check it can be written; else a clear error naming it."""
    import tempfile
    try:
        os.makedirs(path, exist_ok=True)
        with tempfile.TemporaryFile(dir=path):
            pass
    except OSError as err:
        existing = osp.abspath(path)
        while not osp.exists(existing) and osp.dirname(existing) != existing:
            existing = osp.dirname(existing)
        if not osp.isdir(existing):
            where = f'{existing} is a file, not a folder'
        else:
            where = f'{err.strerror}: {err.filename}' if err.strerror and err.filename else str(err)
        raise OSError(err.errno, f'{flag} {path}: cannot write there ({where}); choose a folder you can '
                                 'write') from None
