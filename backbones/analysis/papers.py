"""The papers' figures, gathered from the registered families (each family's ``paper``)."""
from __future__ import annotations

from typing import Dict

from ..registry import variants

#: the papers' input sizes (H, W) for whole-model FLOPs, by toolbox
PAPER_SHAPES = {'mmdet': (800, 1280), 'mmseg': (512, 512)}


def imagenet_figures() -> Dict[str, Dict[str, str]]:
    """ImageNet-1k at 224 by variant name: params (M, with classifier), GMACs, top-1 (%), as
    printed; variants whose paper gives none are left out."""
    return {v.name: v.imagenet for v in variants() if v.imagenet}


def agrees(measured: float, paper: str, tolerance: float) -> bool:
    """Equal at the precision the paper prints (``paper`` as printed), or within
    ``tolerance`` (relative)."""
    decimals = len(paper.split('.')[1]) if '.' in paper else 0
    value = float(paper)
    return f'{measured:.{decimals}f}' == paper or abs(measured - value) <= tolerance * value
