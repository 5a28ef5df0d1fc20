"""Adaptive gradient clipping (NFNet's AGC, timm's ``adaptive_clip_grad``) as mmengine optim wrappers.

mmengine's ``OptimWrapper`` clips by norm or by value only. The official EfficientFormerV2
training clips with ``--clip-mode agc --clip-grad 0.01``: every parameter's gradient, unit-wise
(per output channel), is scaled down to at most ``clip_factor * max(|W|, eps)``, after the
loss scaler's unscaling and before the optimizer step. These wrappers do exactly that through
timm's own function, on every parameter of the optimizer that has a gradient.

``AmpAGCOptimWrapper`` is the mixed-precision twin of ``AGCOptimWrapper``, named as mmengine
names ``AmpOptimWrapper`` after ``OptimWrapper``: ``--amp`` (tools/train.py) turns an optim
wrapper ``X`` into ``AmpX`` (see :func:`backbones.runtime.engine.amp_optim_wrapper`).
"""
from __future__ import annotations

from typing import Any, Dict, Optional

from mmengine.optim import AmpOptimWrapper, OptimWrapper
from mmengine.registry import OPTIM_WRAPPERS

from ..checks import real_number


def agc_settings(clip_grad: Optional[dict]) -> Dict[str, float]:
    """The keyword arguments of timm's ``adaptive_clip_grad`` from a ``clip_grad`` config:
    ``dict(type='agc', clip_factor=0.01, eps=1e-3, norm_type=2.0)`` (``eps`` and ``norm_type``
    default to timm's 1e-3 and 2)."""
    if isinstance(clip_grad, dict) and clip_grad.get('type', 'agc') != 'agc':
        raise ValueError(f"an AGC optim wrapper clips with clip_grad type 'agc', got {clip_grad['type']!r}; for "
                         "'norm' or 'value' clipping use OptimWrapper / AmpOptimWrapper")
    if not isinstance(clip_grad, dict) or 'clip_factor' not in clip_grad:
        raise ValueError(f'an AGC optim wrapper needs clip_grad=dict(type=\'agc\', clip_factor=..., eps=1e-3) (the '
                         f'official EfficientFormerV2 recipe: clip_factor=0.01); got clip_grad={clip_grad!r}')
    settings = dict(clip_grad)
    settings.pop('type', None)
    unknown = set(settings) - {'clip_factor', 'eps', 'norm_type'}
    if unknown:
        raise ValueError(f'clip_grad for AGC takes clip_factor, eps and norm_type; got also {sorted(unknown)}')
    settings.setdefault('eps', 1e-3)
    settings.setdefault('norm_type', 2.0)
    return {key: real_number('AGC', f'clip_grad.{key}', value, strict=True) for key, value in settings.items()}


class _AdaptiveClipping:
    """Sets ``clip_func`` / ``clip_grad_kwargs``, which ``step`` uses: OptimWrapper clips
    before the step, AmpOptimWrapper unscales the gradients, clips, then steps."""

    def __init__(self, *args: Any, clip_grad: Optional[dict] = None, **kwargs: Any) -> None:
        settings = agc_settings(clip_grad)
        super().__init__(*args, **kwargs)
        from timm.utils.agc import adaptive_clip_grad
        self.clip_func = adaptive_clip_grad  # returns no norm, so mmengine logs no grad_norm
        self.clip_grad_kwargs = settings


@OPTIM_WRAPPERS.register_module()
class AGCOptimWrapper(_AdaptiveClipping, OptimWrapper):
    """``OptimWrapper`` with adaptive gradient clipping before each step.

    Example::

        optim_wrapper = dict(type='AGCOptimWrapper', optimizer=dict(type='AdamW', lr=1e-3),
                             clip_grad=dict(type='agc', clip_factor=0.01, eps=1e-3))
    """


@OPTIM_WRAPPERS.register_module()
class AmpAGCOptimWrapper(_AdaptiveClipping, AmpOptimWrapper):
    """``AmpOptimWrapper`` with adaptive gradient clipping of the unscaled gradients before
    each step (the official ``NativeScaler`` order: unscale, clip, step)."""
