"""Eager PyTorch forwards of our backbones beside timm's implementation of the same ones."""
from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Callable, List, Optional, Sequence

import torch

from ..registry import get_variant, variants
from .timing import time_interleaved


@dataclass
class EagerTiming:
    model: str
    batch: int
    threads: int
    ours_ms: float
    timm_ms: float

    @property
    def ratio(self) -> float:
        return self.ours_ms / self.timm_ms


def eager_comparison(names: Optional[Sequence[str]] = None, batch: int = 8, size: int = 224,
                     threads: Optional[int] = None, seconds: float = 2.0,
                     log: Callable[[str], None] = print) -> List[EagerTiming]:
    """Eager forward time (``torch.no_grad``, eval) of our backbones beside timm's
    ``forward_features`` of the same architecture and weights, for every variant whose family
    names a timm counterpart (``timm_model``; EfficientFormerV2), or the ``names`` given."""
    import timm
    previous = torch.get_num_threads()
    torch.set_num_threads(threads or os.cpu_count() or 1)
    x = torch.rand(batch, 3, size, size, generator=torch.Generator().manual_seed(0))
    chosen = [get_variant(n) for n in names] if names else [v for v in variants() if v.cls.timm_model]
    results = []
    try:
        for variant in chosen:
            reference = timm.create_model(variant.cls.timm_model.format(arch=variant.arch), pretrained=False,
                                          img_size=size).eval()
            ours = variant.cls(arch=variant.arch, **variant.cls.size_kwargs((size, size))).eval()
            ours.load_state_dict(reference.state_dict())
            with torch.no_grad():
                stats = time_interleaved({'ours': lambda: ours(x), 'timm': lambda: reference.forward_features(x)},
                                         seconds * 2, rounds=6)
            results.append(EagerTiming(variant.name, batch, torch.get_num_threads(), stats['ours'][0],
                                       stats['timm'][0]))
            r = results[-1]
            log(f'eager {r.model:<22} batch {batch}: ours {r.ours_ms:7.1f} ms  timm {r.timm_ms:7.1f} ms  '
                f'({r.ratio:.2f}x)')
    finally:
        torch.set_num_threads(previous)
    return results


def format_eager_table(timings: Sequence[EagerTiming]) -> str:
    lines = ['Eager PyTorch forward, eval, no_grad:', '',
             '| model | batch | threads | ours ms | timm ms | ours / timm |', '|---|---|---|---|---|---|']
    for t in timings:
        lines.append(f'| {t.model} | {t.batch} | {t.threads} | {t.ours_ms:.1f} | {t.timm_ms:.1f} | {t.ratio:.2f} |')
    return '\n'.join(lines)
