"""Pieces the command-line tools share: how they end on an error, the warning policy, common
arguments."""
from __future__ import annotations

import argparse
import os
import sys
import warnings
from typing import Callable, List, Optional, Sequence, Tuple

from ..export.runner import positive_int, writable_folder_problem  # noqa: F401  (the tools' argument types)
from .cfg_options import add_cfg_options_argument

#: exit statuses of every tool: done; the run failed (an export format, a bug); the input or
#: the arguments are wrong (the message says how to fix them); interrupted
EXIT_OK, EXIT_FAILED, EXIT_USER_ERROR, EXIT_INTERRUPTED = 0, 1, 2, 130


class UserError(Exception):
    """A problem with what the user gave (a file, an option, a config) that the user can fix;
    the message names it and the fix."""


class RunFailed(Exception):
    """A run that cannot go on for a reason its message states (not a bug): exit status 1."""


def _user_errors() -> tuple:
    from ..checkpoints.io import CheckpointFileError
    # OSError: missing, unreadable or unwritable files and folders; ValueError / TypeError /
    # KeyError: what mmengine raises for a config it cannot build, and what the package raises
    # for arguments it refuses
    return (UserError, CheckpointFileError, OSError, ValueError, TypeError, KeyError)


def describe_error(err: BaseException) -> str:
    """An exception as one line: its message (an OSError as ``path: reason``)."""
    if isinstance(err, OSError) and err.strerror and err.filename and not str(err).startswith(str(err.filename)):
        text = f'{err.filename}: {err.strerror}'
    elif isinstance(err, KeyError) and len(err.args) == 1:
        text = str(err.args[0])
    else:
        text = str(err) or type(err).__name__
    return ' '.join(text.split())


def run_tool(main: Callable[[List[str]], int], argv: Optional[Sequence[str]] = None) -> int:
    """Run a tool's ``main(argv)`` and end as every tool does: a user error is one line on
    stderr and exit status 2, any other failure one line and status 1, Ctrl-C status 130; with
    ``--debug`` in ``argv`` (or ``EDGEFORMERS_DEBUG=1``) the exception propagates with its
    traceback."""
    argv = list(sys.argv[1:] if argv is None else argv)
    debug = '--debug' in argv or os.environ.get('EDGEFORMERS_DEBUG', '') not in ('', '0')
    try:
        return main(argv)
    except KeyboardInterrupt:
        if debug:
            raise
        print('interrupted', file=sys.stderr)
        return EXIT_INTERRUPTED
    except Exception as err:  # noqa: BLE001  (every error ends as one line unless --debug)
        if debug:
            raise
        if isinstance(err, _user_errors()):
            print(f'error: {describe_error(err)}', file=sys.stderr)
            return EXIT_USER_ERROR
        if isinstance(err, RunFailed):
            print(f'error: {describe_error(err)}', file=sys.stderr)
            return EXIT_FAILED
        print(f'error: {type(err).__name__}: {describe_error(err)} (an unexpected failure; --debug shows the '
              'traceback)', file=sys.stderr)
        return EXIT_FAILED


def add_debug_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument('--debug', action='store_true',
                        help='on an error, show its traceback (also EDGEFORMERS_DEBUG=1)')

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


def add_size_argument(parser: argparse.ArgumentParser, default: Tuple[int, int], flag: str = '--size',
                      help: str = 'input height and width') -> None:
    parser.add_argument(flag, type=int, nargs=2, default=default, metavar=('H', 'W'),
                        help=f'{help} (default: {default[0]} {default[1]})')


def add_runner_arguments(parser: argparse.ArgumentParser, what: str) -> None:
    """The flags tools/train.py and tools/test.py share with mmdet's tools."""
    parser.add_argument('--work-dir', help=f'where logs and {what} go (default: work_dirs/<config name>)')
    add_cfg_options_argument(parser, 'override config settings, key=value (e.g. train_cfg.max_epochs=1); a key the '
                                     'config lacks is named in a warning')
    parser.add_argument('--launcher', choices=['none', 'pytorch', 'slurm', 'mpi'], default='none',
                        help='job launcher (pytorch for torchrun, slurm for srun)')
    parser.add_argument('--local_rank', '--local-rank', type=int, default=0)
    add_debug_argument(parser)


def parse_runner_args(parser: argparse.ArgumentParser, argv: Optional[Sequence[str]]) -> argparse.Namespace:
    """The arguments of a tool with :func:`add_runner_arguments`, third-party warnings quieted
    first; ``--local-rank`` (torch.distributed.launch passes it) becomes ``LOCAL_RANK`` where
    the launcher set none (torchrun sets it)."""
    quiet_third_party_warnings()
    args = parser.parse_args(argv)
    os.environ.setdefault('LOCAL_RANK', str(args.local_rank))
    return args


def check_writable_dir(path: str, flag: str) -> None:
    """Create ``path`` if needed and check it can be written; else a :class:`UserError` naming it."""
    problem = writable_folder_problem(path)
    if problem:
        raise UserError(f'{flag} {path}: cannot write there ({problem}); choose a folder you can write')
