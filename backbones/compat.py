"""Compatibility of the pinned stack with torch >= 2.6.

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


def patch_checkpoint_loading() -> None:
    """Register :func:`load_local_checkpoint` as mmengine's loader for local paths (idempotent)."""
    global _PATCHED
    if _PATCHED:
        return
    from mmengine.runner.checkpoint import CheckpointLoader
    CheckpointLoader.register_scheme(prefixes='', loader=load_local_checkpoint, force=True)
    _PATCHED = True
