"""The ImageNet head of the official classifiers, as an mmpretrain head."""
from __future__ import annotations

from typing import Dict, List, Optional, Tuple, Union

import torch
import torch.nn as nn
from mmpretrain.models.heads import ClsHead
from mmpretrain.registry import MODELS
from mmpretrain.structures import DataSample

from ..checks import whole_number
from .distill import distillation_loss


@MODELS.register_module()
class EdgeformersClsHead(ClsHead):
    """BatchNorm over the last stage's channels -> global average pool -> Linear, as both
    official classifiers end; with ``distillation`` a second Linear on the same pooled
    feature, the distillation head.

    The submodules are ``norm``, ``head`` and ``head_dist``, so an mmpretrain
    ``ImageClassifier`` with this head saves ``head.norm.*``, ``head.head.*`` and
    ``head.head_dist.*`` beside ``backbone.*``.

    Output (``forward``, predictions): the class head's logits; with a distillation head the
    mean of both heads' logits, as the official EfficientFormerV2 and timm evaluate.

    Loss (:meth:`loss`): the class head's loss (``loss``, e.g. label smoothing on the mixed
    targets). With a distillation head and teacher logits: the official formula
    ``(1 - alpha) * loss(head) + alpha * distillation(head_dist, teacher)`` (see
    :func:`~backbones.pretrain.distill.distillation_loss`). With a distillation head and no
    teacher, both heads learn the labels: ``(1 - alpha) * loss(head) + alpha * loss(head_dist)``.

    Args:
        num_classes: classes of the dataset.
        in_channels: channels of the backbone's last output (its last stage's width).
        distillation: add the distillation head ``head_dist``.
        loss: the classification loss (an mmpretrain loss config or module).
        init_cfg: the official initialisation: Linear layers truncated normal (std 0.02),
            bias 0; the BatchNorm starts at weight 1, bias 0.
    """

    def __init__(self,
                 num_classes: int,
                 in_channels: int,
                 distillation: bool = False,
                 loss: Union[dict, nn.Module] = dict(type='CrossEntropyLoss', loss_weight=1.0),
                 init_cfg: Optional[Union[dict, List[dict]]] = dict(type='TruncNormal', layer='Linear', std=.02,
                                                                     bias=0.)) -> None:
        super().__init__(loss=loss, init_cfg=init_cfg)
        self.num_classes = whole_number('EdgeformersClsHead', 'num_classes', num_classes, least=1)
        self.in_channels = whole_number('EdgeformersClsHead', 'in_channels', in_channels, least=1)
        self.distillation = bool(distillation)
        self.norm = nn.BatchNorm2d(in_channels)
        self.head = nn.Linear(in_channels, num_classes)
        self.head_dist = nn.Linear(in_channels, num_classes) if distillation else None

    def pre_logits(self, feats: Tuple[torch.Tensor, ...]) -> torch.Tensor:
        """The pooled feature: BatchNorm of the last output, averaged over space."""
        x = feats[-1]
        if x.dim() != 4 or x.shape[1] != self.in_channels:
            raise ValueError(f'EdgeformersClsHead expects the backbone\'s last output as (N, {self.in_channels}, '
                             f'H, W), got {tuple(x.shape)}; set head.in_channels to the last stage\'s width and '
                             'backbone.out_indices to the last stage')
        return self.norm(x).mean(dim=(2, 3))

    def forward_heads(self, feats: Tuple[torch.Tensor, ...]) -> Tuple[torch.Tensor, Optional[torch.Tensor]]:
        """The logits of the class head and of the distillation head (None without one)."""
        x = self.pre_logits(feats)
        return self.head(x), (self.head_dist(x) if self.head_dist is not None else None)

    def forward(self, feats: Tuple[torch.Tensor, ...]) -> torch.Tensor:
        logits, logits_dist = self.forward_heads(feats)
        return logits if logits_dist is None else (logits + logits_dist) / 2

    def targets(self, data_samples: List[DataSample]) -> torch.Tensor:
        """The batch's targets: the mixed scores of a batch augmentation, else the labels."""
        if 'gt_score' in data_samples[0]:
            return torch.stack([s.gt_score for s in data_samples])
        return torch.cat([s.gt_label for s in data_samples])

    def loss(self, feats: Tuple[torch.Tensor, ...], data_samples: List[DataSample],
             teacher_logits: Optional[torch.Tensor] = None, type: str = 'hard', alpha: float = 0.5,
             tau: float = 1.0) -> Dict[str, torch.Tensor]:
        """The training losses (their sum is the loss trained on).

        Args:
            teacher_logits: the teacher's logits on the same (mixed) batch; only a head with
                a distillation head takes them.
            type / alpha / tau: the distillation (``'hard'`` or ``'soft'``), the weight of the
                distillation head's loss, the soft distillation's temperature.

        Returns:
            ``{'loss': ...}`` without a distillation head; ``{'loss_cls': (1 - alpha) * ...,
            'loss_dist': alpha * ...}`` with one.
        """
        logits, logits_dist = self.forward_heads(feats)
        target = self.targets(data_samples)
        base = self.loss_module(logits, target, avg_factor=logits.size(0))
        if logits_dist is None:
            if teacher_logits is not None:
                raise ValueError('EdgeformersClsHead: teacher logits given to a head without a distillation '
                                 'head; set head.distillation=True')
            return dict(loss=base)
        if teacher_logits is None:
            dist = self.loss_module(logits_dist, target, avg_factor=logits_dist.size(0))
        else:
            dist = distillation_loss(logits_dist, teacher_logits, type=type, tau=tau)
        return dict(loss_cls=base * (1 - alpha), loss_dist=dist * alpha)
