"""timm's cosine schedule as the official training scripts step it, as an mmengine scheduler.

The official ``main.py`` of EfficientFormerV2 and of EdgeViT (both DeiT's) build timm's
``CosineLRScheduler(t_initial=epochs, lr_min=min_lr, warmup_lr_init=warmup_lr,
warmup_t=warmup_epochs, cycle_limit=1, t_in_epochs=True)`` (``warmup_prefix=False``) and call
``lr_scheduler.step(epoch)`` once, at the end of epoch ``epoch``. Constructing it sets the lr
to ``warmup_lr_init``. So epoch ``e`` trains at

* ``e == 0``: ``warmup_lr_init`` (the base lr when there is no warmup);
* ``e >= 1``: ``f(e - 1)``, where ``f(t) = warmup_lr_init + t * (lr - warmup_lr_init) / warmup_t``
  for ``t < warmup_t`` and ``lr_min + (lr - lr_min) * (1 + cos(pi * t / t_initial)) / 2`` from
  there on (the cosine runs over the whole ``t_initial``, warmup included; ``lr_min`` from
  ``t_initial``).

Epochs 0 and 1 therefore both train at ``warmup_lr_init``, and the last of 300 epochs at
``f(298)``. mmengine's ``LinearLR`` + ``CosineAnnealingLR`` do not give these values (their
cosine starts after the warmup and nothing repeats the first lr); :class:`TimmCosineLR` does.
"""
from __future__ import annotations

import math
from typing import List, Optional, Union

from mmengine.optim import OptimWrapper
from mmengine.optim.scheduler.lr_scheduler import LRSchedulerMixin
from mmengine.optim.scheduler.param_scheduler import INF, _ParamScheduler
from mmengine.registry import PARAM_SCHEDULERS
from torch.optim import Optimizer

from ..checks import real_number, whole_number


def timm_cosine_lr(epoch: int, base_lr: float, t_initial: int, lr_min: float = 0., warmup_t: int = 0,
                   warmup_lr_init: float = 0.) -> float:
    """The lr that epoch ``epoch`` (0-based) trains at under the official stepping (module docstring)."""
    if epoch == 0:
        return warmup_lr_init if warmup_t else base_lr
    t = epoch - 1
    if t < warmup_t:
        return warmup_lr_init + t * (base_lr - warmup_lr_init) / warmup_t
    if t >= t_initial:
        return lr_min
    return lr_min + 0.5 * (base_lr - lr_min) * (1 + math.cos(math.pi * t / t_initial))


@PARAM_SCHEDULERS.register_module()
class TimmCosineLR(LRSchedulerMixin, _ParamScheduler):
    """Per-epoch warmup + cosine lr, epoch for epoch as the official ``main.py`` trains with
    timm's ``CosineLRScheduler`` (see the module docstring).

    Each parameter group's lr follows the schedule from its own initial lr (the optimizer's,
    after mmengine's ``auto_scale_lr`` where enabled); ``warmup_lr_init`` and ``lr_min`` are
    absolute, as in timm.

    Args:
        optimizer: the optimizer or optim wrapper.
        t_initial: the cosine's length in epochs; None takes ``end - begin`` (mmengine sets
            ``end`` to ``train_cfg.max_epochs``), the official ``t_initial=epochs``.
        lr_min: the official ``--min-lr``.
        warmup_t: warmup epochs (``--warmup-epochs``).
        warmup_lr_init: the lr warmup starts from (``--warmup-lr``).
        begin, end, last_step, verbose: as mmengine's schedulers. ``by_epoch`` must be True.
    """

    def __init__(self,
                 optimizer: Union[Optimizer, OptimWrapper],
                 t_initial: Optional[int] = None,
                 lr_min: float = 0.,
                 warmup_t: int = 0,
                 warmup_lr_init: float = 0.,
                 begin: int = 0,
                 end: int = INF,
                 last_step: int = -1,
                 by_epoch: bool = True,
                 verbose: bool = False) -> None:
        if not by_epoch:
            raise ValueError('TimmCosineLR steps per epoch, as the official training does; set by_epoch=True and '
                             'train by epochs (train_cfg=dict(by_epoch=True, max_epochs=...))')
        if t_initial is None:
            if end == INF:
                raise ValueError('TimmCosineLR: give t_initial (the schedule\'s epochs) or end')
            t_initial = end - begin
        self.t_initial = whole_number('TimmCosineLR', 't_initial', t_initial, least=1, unit='epochs')
        self.warmup_t = whole_number('TimmCosineLR', 'warmup_t', warmup_t, least=0, unit='epochs')
        self.lr_min = real_number('TimmCosineLR', 'lr_min', lr_min)
        self.warmup_lr_init = real_number('TimmCosineLR', 'warmup_lr_init', warmup_lr_init)
        super().__init__(optimizer, begin=begin, end=end, last_step=last_step, by_epoch=by_epoch, verbose=verbose)

    def _get_value(self) -> List[float]:
        # last_step is the epoch about to be trained, counted from `begin`
        return [timm_cosine_lr(self.last_step, base, self.t_initial, self.lr_min, self.warmup_t,
                               self.warmup_lr_init) for base in self.base_values]
