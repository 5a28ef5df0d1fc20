"""Reading checkpoint files, and the local-file loader mmengine uses for our tools.

mmengine 0.10.7 reads checkpoints with ``torch.load(path)``. Since torch 2.6 that means
``weights_only=True``, which refuses the checkpoints mmengine itself writes (they pickle a
message hub, numpy scalars, the config): ``--resume`` and ``load_from`` break. We register a
local-file loader through mmengine's own ``CheckpointLoader`` scheme registry: it loads
tensor-only files safely and falls back to a full load for the user's own local files, as
mmengine did before torch 2.6. Applied by ``import backbones``, so any runner whose config
has ``custom_imports=dict(imports=['backbones'])`` gets it.
"""
from __future__ import annotations

import os
import pickle
from typing import Any, Dict

import torch

_PATCHED = False


def load_local_checkpoint(filename: str, map_location=None):
    """Load a local checkpoint: ``weights_only=True`` first, a full load for mmengine's own."""
    filename = os.path.expanduser(filename)
    if not os.path.isfile(filename):
        raise FileNotFoundError(f'{filename} can not be found.')
    try:
        return torch.load(filename, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError:
        # an mmengine training checkpoint (meta, message hub, optimizer state with numpy)
        return torch.load(filename, map_location=map_location, weights_only=False)


def register_mmengine_loader() -> None:
    """Register :func:`load_local_checkpoint` as mmengine's loader for local paths (idempotent)."""
    global _PATCHED
    if _PATCHED:
        return
    from mmengine.runner.checkpoint import CheckpointLoader
    CheckpointLoader.register_scheme(prefixes='', loader=load_local_checkpoint, force=True)
    _PATCHED = True


def read_checkpoint(path: str, map_location: str = 'cpu') -> Dict[str, Any]:
    """Load a checkpoint file (local path, or any URL mmengine's loader knows).

    Plain tensor checkpoints load with ``weights_only=True``; a checkpoint that also pickles
    other objects (mmengine's ``meta``, message hubs) is loaded fully (see above).
    """
    if '://' in str(path):
        from mmengine.runner import CheckpointLoader
        return CheckpointLoader.load_checkpoint(path, map_location=map_location)
    path = os.path.expanduser(str(path))
    if not os.path.isfile(path):
        raise FileNotFoundError(f'checkpoint file {path!r} does not exist; check init_cfg.checkpoint '
                                '(or the path you passed)')
    return load_local_checkpoint(path, map_location=map_location)
