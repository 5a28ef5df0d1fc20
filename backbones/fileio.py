"""Atomic writes: every file the project writes appears complete under its name, or not at all.

A file is written to a temporary name in the destination's own folder (same file system),
flushed to disk, and renamed over the destination with :func:`os.replace`, which is atomic on
POSIX and Windows. Only an earlier output of the same kind is replaced: a folder where a file
should go, or a folder that is not an earlier package of the same layout, is refused with
:class:`ReplaceRefusedError` and left as it is. A process killed during the write leaves the
previous file intact (and at most a hidden ``.NAME.tmp-*`` file beside it); an exception
removes the temporary file.

Use :func:`atomic_write` for a file object, :func:`atomic_path` for writers that take a path
(ONNX, ExecuTorch, Core ML packages, matplotlib), and the one-liners :func:`save_torch`,
:func:`write_text`, :func:`write_json`. A destination that is a symbolic link is written
through (its target is replaced); a hard-linked destination is detached from its other names.
Imports nothing of the package.
"""
from __future__ import annotations

import contextlib
import json
import os
import os.path as osp
import shutil
import uuid
from typing import IO, Any, Iterator


def _destination(path: str) -> str:
    path = osp.abspath(osp.expanduser(os.fspath(path)))
    return osp.realpath(path) if osp.islink(path) else path


def _temporary_name(path: str) -> str:
    """A fresh hidden name beside ``path`` keeping its suffix (writers that pick the format
    by suffix, such as matplotlib or Core ML, still see it)."""
    folder, name = osp.split(path)
    stem, suffix = osp.splitext(name)
    return osp.join(folder, f'.{stem}.tmp-{uuid.uuid4().hex[:12]}{suffix}')


def _fsync_file(path: str) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _fsync_folder(folder: str) -> None:
    """Make a rename in ``folder`` durable (no-op where folders cannot be opened, e.g. Windows)."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _remove(path: str) -> None:
    """Remove a temporary file or folder this module made (never anything else)."""
    if osp.isdir(path) and not osp.islink(path):
        shutil.rmtree(path, ignore_errors=True)
    else:
        with contextlib.suppress(FileNotFoundError):
            os.remove(path)


class ReplaceRefusedError(IsADirectoryError):
    """The destination is a folder (or a file) that the new output may not replace: it is not an
    earlier output of the same kind. Nothing was deleted."""


def _check_replaceable(tmp: str, path: str) -> None:
    """An existing ``path`` may be replaced only by an output of its own kind: a file by a file,
    and a folder (a package such as ``.mlpackage``) by a folder whose top-level entries include
    all of the old one's. Anything else is refused, so that no folder a user keeps (a project,
    a dataset, a work dir that happens to have the output's name) is ever deleted."""
    if not osp.lexists(path) or osp.islink(path) and not osp.isdir(path):
        return
    new_is_dir, old_is_dir = osp.isdir(tmp), osp.isdir(path)
    if not old_is_dir and not new_is_dir:
        return
    if old_is_dir and new_is_dir and set(os.listdir(path)) <= set(os.listdir(tmp)):
        return
    what = 'a folder' if old_is_dir else 'a file'
    raise ReplaceRefusedError(
        f'{path} is {what} that is not an earlier output of this kind, so it is not replaced (nothing was '
        'deleted); move it away or choose another output name')


def _replace(tmp: str, path: str) -> None:
    """Rename ``tmp`` over ``path`` (see :func:`_check_replaceable`). A folder (``.mlpackage``)
    cannot replace a non-empty one atomically: the old one is renamed aside first and removed
    after, so a complete copy exists under one of the two names at every moment."""
    _check_replaceable(tmp, path)
    if osp.isdir(tmp) and osp.isdir(path) and not osp.islink(path):
        aside = _temporary_name(path)
        os.replace(path, aside)
        os.replace(tmp, path)
        shutil.rmtree(aside, ignore_errors=True)
    else:
        os.replace(tmp, path)
    _fsync_folder(osp.dirname(path))


@contextlib.contextmanager
def atomic_path(path: str) -> Iterator[str]:
    """Yield a temporary path beside ``path`` for a writer to create (a file or a folder);
    on success it is flushed and renamed to ``path``, on an exception removed.

    Example::

        with atomic_path('model.onnx') as tmp:
            torch.onnx.export(module, (x,), tmp)
    """
    path = _destination(path)
    os.makedirs(osp.dirname(path), exist_ok=True)
    tmp = _temporary_name(path)
    try:
        yield tmp
        if not osp.exists(tmp):
            raise FileNotFoundError(f'the writer of {path} created nothing at {tmp}')
        if osp.isdir(tmp):
            for folder, _, files in os.walk(tmp):
                for name in files:
                    _fsync_file(osp.join(folder, name))
        else:
            _fsync_file(tmp)
        _replace(tmp, path)
    except BaseException:
        _remove(tmp)
        raise


@contextlib.contextmanager
def atomic_write(path: str, mode: str = 'wb', **open_kwargs: Any) -> Iterator[IO]:
    """Open a temporary file beside ``path`` for writing (``'wb'`` or ``'w'``); on success it
    is flushed, synced and renamed to ``path``, on an exception removed."""
    if mode not in ('w', 'wb', 'wt'):
        raise ValueError(f'atomic_write writes whole files: mode must be w / wb / wt, got {mode!r}')
    if osp.isdir(path):  # before anything is written: a file never replaces a folder
        raise ReplaceRefusedError(f'{path} is a folder, not an earlier output file, so it is not replaced (nothing '
                                  'was deleted); move it away or choose another output name')
    with atomic_path(path) as tmp:
        # 'x': the fresh name is never an existing file; the mode bits follow the umask as open() does
        with open(tmp, mode.replace('w', 'x'), **open_kwargs) as f:
            yield f
            f.flush()
            os.fsync(f.fileno())


def save_torch(obj: Any, path: str) -> None:
    """``torch.save(obj, path)``, atomically."""
    import torch
    with atomic_write(path) as f:
        torch.save(obj, f)


def write_text(path: str, text: str) -> None:
    with atomic_write(path, 'w', encoding='utf-8') as f:
        f.write(text)


def write_json(path: str, obj: Any, **dump_kwargs: Any) -> None:
    with atomic_write(path, 'w', encoding='utf-8') as f:
        json.dump(obj, f, **dump_kwargs)
