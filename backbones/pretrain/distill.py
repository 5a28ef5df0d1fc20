"""Distillation from a frozen teacher, as the official EfficientFormerV2 (and DeiT) training runs it.

The official ``DistillationLoss`` (snap-research/EfficientFormer ``util/losses.py``): the
student returns the logits of its class head and of its distillation head; the teacher sees
the same mixed-up / cut-mixed batch under ``no_grad``, and

* hard: ``loss = (1 - alpha) * base_loss(head, mixed smoothed targets)
  + alpha * cross_entropy(head_dist, argmax(teacher))``;
* soft: the distillation term is ``KL(log_softmax(head_dist / tau) || log_softmax(teacher / tau))``
  summed, times ``tau**2``, over the number of logits.

The teacher is a timm model built by name, with weights read from a file the user gives.
"""
from __future__ import annotations

import logging
from typing import Any, Dict, List, Optional

import torch
import torch.nn as nn
import torch.nn.functional as F
from mmengine.logging import print_log
from mmpretrain.models.classifiers import ImageClassifier
from mmpretrain.registry import MODELS
from mmpretrain.structures import DataSample

from ..checks import is_number, real_number
from ..checkpoints.io import read_checkpoint

DISTILLATION_TYPES = ('hard', 'soft')
#: the official teacher's weights (timm ``regnety_160``, trained by DeiT), as the official code downloads them
DEIT_TEACHER_URL = 'https://dl.fbaipublicfiles.com/deit/regnety_160-a5fe301d.pth'


def distillation_loss(logits_dist: torch.Tensor, teacher_logits: torch.Tensor, type: str = 'hard',
                      tau: float = 1.0) -> torch.Tensor:
    """The distillation term of the official loss (before the ``alpha`` weight).

    ``'hard'``: cross-entropy of the distillation head against the teacher's argmax (``tau``
    unused). ``'soft'``: KL divergence at temperature ``tau``, summed, times ``tau**2``, over
    the number of logits.
    """
    if type == 'hard':
        return F.cross_entropy(logits_dist, teacher_logits.argmax(dim=1))
    if type == 'soft':
        return F.kl_div(F.log_softmax(logits_dist / tau, dim=1), F.log_softmax(teacher_logits / tau, dim=1),
                        reduction='sum', log_target=True) * (tau * tau) / logits_dist.numel()
    raise ValueError(f'distillation type must be one of {DISTILLATION_TYPES}, got {type!r}')


class FrozenTeacher:
    """A frozen network beside a student, outside its module tree.

    Being no submodule, the teacher is not in the student's ``state_dict`` (so not in its
    checkpoints), ``parameters()`` (so not in the optimizer, DDP or EMA averaging), and not
    converted by SyncBN conversion; the student's ``train()`` does not reach it, and it runs
    in eval mode under ``no_grad``. A deep copy of the student (mmengine's EMA model) shares
    it rather than copying it.
    """

    def __init__(self, module: nn.Module) -> None:
        self.module = module.eval().requires_grad_(False)

    def __deepcopy__(self, memo: Dict[int, Any]) -> 'FrozenTeacher':
        return self

    def __call__(self, inputs: torch.Tensor) -> torch.Tensor:
        if self.module.training:
            self.module.eval()
        with torch.no_grad():
            return self.module(inputs)


def build_teacher(name: str, checkpoint: str, num_classes: int = 1000, **kwargs: Any) -> nn.Module:
    """timm's model ``name`` (``global_pool='avg'``, as the official code builds it) with the
    weights of ``checkpoint``, read through the allow-list (a state dict, or one under
    ``'model'`` as DeiT's teacher files store it, or under ``'state_dict'``), loaded strictly.
    ``kwargs`` go to ``timm.create_model``."""
    import timm
    if not isinstance(name, str) or not timm.is_model(name):
        raise ValueError(f'teacher name {name!r} is not a timm model; give one of timm.list_models(), e.g. '
                         "'regnety_160'")
    kwargs.setdefault('global_pool', 'avg')
    model = timm.create_model(name, pretrained=False, num_classes=num_classes, **kwargs)
    raw = read_checkpoint(checkpoint)
    state_dict = raw
    if isinstance(raw, dict):
        state_dict = raw.get('model', raw.get('state_dict', raw))
    if not isinstance(state_dict, dict) or not all(isinstance(v, torch.Tensor) for v in state_dict.values()):
        raise ValueError(f'teacher checkpoint {checkpoint}: holds no state dict of tensors (looked at the file, '
                         "its 'model' and its 'state_dict'); give the teacher's weights file")
    try:
        model.load_state_dict(state_dict, strict=True)
    except RuntimeError as err:
        problems = [line.strip() for line in str(err).splitlines()[1:] if line.strip()]
        raise ValueError(f'teacher checkpoint {checkpoint}: does not fit timm {name!r} with {num_classes} classes '
                         f'({len(problems)} problems, e.g. {"; ".join(problems[:2])}); give the weights of that '
                         'model, or the teacher name they belong to') from None
    return model


@MODELS.register_module()
class DistillingClassifier(ImageClassifier):
    """mmpretrain's ``ImageClassifier`` trained with distillation from a frozen timm teacher.

    The head must have a distillation head (``EdgeformersClsHead(distillation=True)``). In
    training, the teacher sees the same batch as the student, after the batch augmentation
    (Mixup / CutMix) of the data preprocessor, and the loss is the official formula (see
    :func:`distillation_loss` and :meth:`EdgeformersClsHead.loss
    <backbones.pretrain.head.EdgeformersClsHead.loss>`). Prediction is the head's (the mean
    of both heads' logits); the teacher is not used.

    Without a teacher checkpoint (``teacher.checkpoint`` None) training runs without
    distillation, and says so once when the model is built: both heads then learn the labels,
    ``(1 - alpha) * loss(head) + alpha * loss(head_dist)``, so that the distillation head
    still gives the mean at evaluation a trained second half.

    Args:
        teacher: ``dict(name=TIMM_NAME, checkpoint=PATH_URL_OR_None, **create_model_kwargs)``; the
            official teacher is ``regnety_160`` with DeiT's weights (``regnety_160-a5fe301d.pth``).
            It is moved with the student (``.to(device)``), never trained.
        distillation: ``dict(type='hard' | 'soft', alpha=..., tau=...)``; the official
            EfficientFormerV2 recipe is hard, alpha 0.5 (tau unused).
        backbone, neck, head, train_cfg, data_preprocessor, init_cfg: as ``ImageClassifier``.
    """

    def __init__(self, backbone: dict, head: dict, teacher: Optional[dict] = None,
                 distillation: Optional[dict] = None, neck: Optional[dict] = None, **kwargs: Any) -> None:
        super().__init__(backbone=backbone, neck=neck, head=head, **kwargs)
        if getattr(self.head, 'head_dist', None) is None:
            raise ValueError('DistillingClassifier needs a head with a distillation head; set '
                             "head=dict(type='EdgeformersClsHead', distillation=True, ...)")
        self.distillation = self._check_distillation(distillation)
        teacher = dict(teacher or {})
        name, checkpoint = teacher.pop('name', None), teacher.pop('checkpoint', None)
        self.teacher_name = name
        if checkpoint is None:
            self.teacher: Optional[FrozenTeacher] = None
            print_log('DistillingClassifier: no teacher checkpoint, so training runs WITHOUT distillation (both '
                      'heads learn the labels). To distil as the official recipe does, give the teacher\'s weights '
                      'with --cfg-options model.teacher.checkpoint=PATH_OR_URL (the official teacher is timm\'s '
                      f'regnety_160 with DeiT\'s weights, {DEIT_TEACHER_URL})', logger='current',
                      level=logging.WARNING)
        else:
            if name is None:
                raise ValueError("DistillingClassifier: teacher has a checkpoint but no name; give the timm model "
                                 "the weights belong to, e.g. teacher=dict(name='regnety_160', checkpoint=PATH)")
            self.teacher = FrozenTeacher(build_teacher(name, checkpoint, num_classes=self.head.num_classes,
                                                       **teacher))

    @staticmethod
    def _check_distillation(cfg: Optional[dict]) -> Dict[str, Any]:
        out = dict(type='hard', alpha=0.5, tau=1.0)
        unknown = set(cfg or {}) - set(out)
        if unknown:
            raise ValueError(f'DistillingClassifier: distillation takes {sorted(out)}, got {sorted(unknown)}')
        out.update(cfg or {})
        if out['type'] not in DISTILLATION_TYPES:
            raise ValueError(f"DistillingClassifier: distillation type must be one of {DISTILLATION_TYPES} (the "
                             f"official recipe is 'hard'), got {out['type']!r}")
        alpha, tau = out['alpha'], out['tau']
        if not is_number(alpha) or not 0 <= alpha <= 1:
            raise ValueError(f'DistillingClassifier: distillation alpha must be in [0, 1] (the weight of the '
                             f'distillation head\'s loss; official 0.5), got {alpha!r}')
        real_number('DistillingClassifier', 'distillation tau', tau, strict=True)
        return out

    def _apply(self, fn, *args, **kwargs):
        # .to(device) / .cuda() / .half() reach the teacher too, so it runs where the student does
        super()._apply(fn, *args, **kwargs)
        if self.__dict__.get('teacher') is not None:
            self.teacher.module._apply(fn, *args, **kwargs)
        return self

    def loss(self, inputs: torch.Tensor, data_samples: List[DataSample]) -> Dict[str, torch.Tensor]:
        feats = self.extract_feat(inputs)
        teacher_logits = self.teacher(inputs) if self.teacher is not None else None
        return self.head.loss(feats, data_samples, teacher_logits=teacher_logits, **self.distillation)
