"""Everything this package changes in mmengine, in one place.

* :func:`register_mmengine_loader` makes :func:`~backbones.checkpoints.io.load_local_checkpoint`
  mmengine's loader for local paths: every local ``load_checkpoint`` in the process, ours or
  not, then reads through the allow-list. That is never less safe than mmengine's own
  ``torch.load(path)`` (which unpickles anything on torch < 2.6), and lets ``--resume`` and
  ``load_from`` read mmengine's checkpoints on torch >= 2.6, where ``weights_only=True`` is the
  default and refuses them. For ``http(s)://`` it registers
  :func:`~backbones.checkpoints.io.load_url_checkpoint` (a timeout, the URL in every error,
  nothing cached unless whole and readable). ``import backbones`` calls it.
* :func:`make_checkpoints_atomic` gives a runner's ``CheckpointHook`` a file backend that
  writes each checkpoint to a temporary name and renames it into place, and with
  ``max_keep_ckpts`` has it remove the oldest checkpoint only after the new one is written
  (mmengine removes it first, so a failed save would leave fewer checkpoints than asked for,
  with ``max_keep_ckpts=1`` none).
* :class:`~backbones.runtime.resume.RandomStateHook`, registered in mmengine's ``HOOKS`` by
  :mod:`backbones.runtime.resume`, and the CPU process group of
  :mod:`backbones.runtime.engine` are the other two; each lives with its own job.
"""
from __future__ import annotations

from typing import Any

from ..checkpoints.io import load_local_checkpoint, load_url_checkpoint

_LOADER_REGISTERED = False


def load_from_local_allowlisted(filename: str, map_location: Any = None) -> Any:
    """:func:`load_local_checkpoint` under the name mmengine's log shows ("Loads checkpoint by
    local_allowlisted backend")."""
    return load_local_checkpoint(filename, map_location)


def load_from_url_with_timeout(filename: str, map_location: Any = None) -> Any:
    """:func:`~backbones.checkpoints.io.load_url_checkpoint`: a download with a timeout, checked
    before it is cached."""
    return load_url_checkpoint(filename, map_location)


def register_mmengine_loader() -> None:
    """Register the allow-listed loader as mmengine's loader for local paths, for every user
    of mmengine in the process (idempotent)."""
    global _LOADER_REGISTERED
    if _LOADER_REGISTERED:
        return
    from mmengine.runner.checkpoint import CheckpointLoader
    CheckpointLoader.register_scheme(prefixes='', loader=load_from_local_allowlisted, force=True)
    CheckpointLoader.register_scheme(prefixes=('http://', 'https://'), loader=load_from_url_with_timeout, force=True)
    _LOADER_REGISTERED = True


# ---------------------------------------------------------------------------- atomic training checkpoints
#: the mmengine file backend (``backend_args``) that writes local files atomically
ATOMIC_BACKEND = 'edgeformers_atomic_local'
_BACKEND_REGISTERED = False


def _register_atomic_backend() -> None:
    global _BACKEND_REGISTERED
    if _BACKEND_REGISTERED:
        return
    from mmengine.fileio import LocalBackend, register_backend

    from ..fileio import atomic_write

    class AtomicLocalBackend(LocalBackend):
        """mmengine's LocalBackend whose writes go through :func:`backbones.fileio.atomic_write`."""

        def put(self, obj: bytes, filepath) -> None:
            with atomic_write(str(filepath)) as f:
                f.write(obj)

        def put_text(self, obj: str, filepath, encoding: str = 'utf-8') -> None:
            with atomic_write(str(filepath), 'w', encoding=encoding) as f:
                f.write(obj)

    register_backend(ATOMIC_BACKEND, AtomicLocalBackend, force=True)
    _BACKEND_REGISTERED = True


def make_checkpoints_atomic(runner: Any) -> int:
    """Let the runner's ``CheckpointHook``\\ s save through the atomic local backend (a
    checkpoint appears whole under its name or not at all), unless a hook already has its own
    storage settings or saves to a URL, and remove an old checkpoint only once the new one is
    written (:func:`_prune_after_saving`). Returns how many hooks save atomically."""
    from mmengine.hooks import CheckpointHook
    _register_atomic_backend()
    changed = 0
    for hook in getattr(runner, 'hooks', []):
        if not isinstance(hook, CheckpointHook):
            continue
        _prune_after_saving(hook)
        if hook.backend_args is not None:
            continue
        if getattr(hook, 'file_client_args', None) is not None or '://' in str(hook.out_dir or ''):
            continue
        hook.backend_args = dict(backend=ATOMIC_BACKEND)
        changed += 1
    return changed


def _prune_after_saving(hook: Any) -> None:
    """Reorder ``hook``'s save: write the new checkpoint first (mmengine's own code, with room
    for one more), then remove the oldest beyond ``max_keep_ckpts``."""
    if getattr(hook, '_edgeformers_prunes_after_saving', False):
        return
    original = hook._save_checkpoint_with_step

    def save_then_prune(runner, step, meta) -> None:
        if hook.max_keep_ckpts <= 0:
            return original(runner, step, meta)
        from collections import deque

        from mmengine.dist import is_main_process
        keep = hook.max_keep_ckpts
        hook.max_keep_ckpts, hook.keep_ckpt_ids = keep + 1, deque(hook.keep_ckpt_ids, keep + 1)
        try:
            original(runner, step, meta)
        finally:
            hook.max_keep_ckpts = keep
        while len(hook.keep_ckpt_ids) > keep:
            old = hook.file_backend.join_path(hook.out_dir, hook.filename_tmpl.format(hook.keep_ckpt_ids.popleft()))
            if is_main_process() and hook.file_backend.isfile(old):
                hook.file_backend.remove(old)
        hook.keep_ckpt_ids = deque(hook.keep_ckpt_ids, keep)
        runner.message_hub.update_info('keep_ckpt_ids', list(hook.keep_ckpt_ids))

    hook._save_checkpoint_with_step = save_then_prune
    hook._edgeformers_prunes_after_saving = True
