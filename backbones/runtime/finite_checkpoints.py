"""No training checkpoint with NaN or infinite weights is ever written.

A training run that diverges would otherwise go on with NaN weights, save them as the newest
checkpoint, and with ``max_keep_ckpts`` delete an older good one to make room.
:class:`FiniteCheckpointHook` (added to every run by
:func:`backbones.runtime.engine.build_runner`) checks the weights after every iteration, before
the ``CheckpointHook`` runs, and stops the run at the first NaN or infinity, naming the tensors
and the newest checkpoint, which is kept. (One sum over the weights per iteration: a single
device synchronisation.) It also refuses any checkpoint saved another way whose weights are
not finite.
"""
from __future__ import annotations

from mmengine.hooks import Hook
from mmengine.registry import HOOKS

from .cli import RunFailed

HOOK_TYPE = 'FiniteCheckpointHook'


class TrainingDivergedError(RunFailed):
    """The model's weights hold NaN or infinity at a checkpoint: the run is stopped unsaved."""


@HOOKS.register_module()
class FiniteCheckpointHook(Hook):
    """Refuses to save a checkpoint whose model weights are not finite (see the module)."""

    priority = 'VERY_HIGH'

    def after_train_iter(self, runner, batch_idx: int, data_batch=None, outputs=None) -> None:
        import torch
        params = [p.detach() for p in runner.model.parameters()]
        if params and not bool(torch.isfinite(torch.stack([p.sum() for p in params]).sum())):
            self._stop(runner, {name: p for name, p in runner.model.named_parameters()})

    def before_save_checkpoint(self, runner, checkpoint: dict) -> None:
        self._stop(runner, checkpoint.get('state_dict') or {})

    @staticmethod
    def _stop(runner, tensors) -> None:
        from ..checkpoints.loading import nonfinite_tensors
        from .resume import training_checkpoints
        bad = nonfinite_tensors(tensors)
        if not bad:
            return
        kept = training_checkpoints(runner.work_dir)
        raise TrainingDivergedError(
            f'training diverged: at iteration {runner.iter + 1} {len(bad)} weights hold NaN or infinite values '
            f'(e.g. {", ".join(bad[:3])}); the run stops without writing them and no earlier checkpoint is '
            'removed. ' + (f'The newest checkpoint, {kept[0]}, is kept: resume from it with a lower learning rate '
                           'or gradient clipping.' if kept else 'No checkpoint was written before; lower the '
                           'learning rate or clip gradients.'))


def add_finite_checkpoint_hook(cfg) -> None:
    """Add :class:`FiniteCheckpointHook` to ``cfg.custom_hooks`` unless it is there."""
    hooks = list(cfg.get('custom_hooks') or [])
    if not any(isinstance(h, dict) and h.get('type') in (HOOK_TYPE, FiniteCheckpointHook) for h in hooks):
        hooks.append(dict(type=HOOK_TYPE))
    cfg.custom_hooks = hooks
