"""ImageNet classification models around the backbones.

Used to run official / timm classification checkpoints end to end (logits), and to count
parameters and MACs as the papers do (with the classifier). Not needed for detection or
segmentation, where the backbone alone is used.
"""
from __future__ import annotations

from typing import Dict, Union

import torch
import torch.nn as nn

from .base import MultiScaleBackbone
from .checkpoints.io import read_checkpoint
from .checkpoints.layouts import CLASSIFIER_PREFIXES, convert_state_dict
from .checkpoints.loading import extract_state_dict
from .registry import get_variant, variant_names


class ImageClassifier(nn.Module):
    """Backbone's last stage -> BatchNorm -> global average pool -> linear head.

    With ``distillation`` (EfficientFormerV2) a second head is trained against a teacher and
    the eval output is the mean of both heads, as in the official code and timm.
    """

    def __init__(self, backbone: MultiScaleBackbone, num_classes: int = 1000,
                 distillation: bool = False) -> None:
        super().__init__()
        last = backbone.num_stages - 1
        if backbone.out_indices != (last,):
            raise ValueError(f'ImageClassifier needs a backbone with out_indices=({last},), '
                             f'got {backbone.out_indices}')
        self.backbone = backbone
        dim = backbone.stage_channels[last]
        self.norm = nn.BatchNorm2d(dim)
        self.head = nn.Linear(dim, num_classes)
        self.head_dist = nn.Linear(dim, num_classes) if distillation else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        feat = self.norm(self.backbone(x)[-1]).mean(dim=(2, 3))
        logits = self.head(feat)
        if self.head_dist is not None:
            logits = (logits + self.head_dist(feat)) / 2
        return logits

    def load_checkpoint(self, checkpoint: Union[str, Dict[str, torch.Tensor]]) -> None:
        """Load a classification checkpoint in any supported layout (strict)."""
        raw = read_checkpoint(checkpoint) if isinstance(checkpoint, str) else checkpoint
        state_dict, _ = convert_state_dict(extract_state_dict(raw))
        ours = {('' if k.startswith(CLASSIFIER_PREFIXES) else 'backbone.') + k: v for k, v in state_dict.items()}
        self.load_state_dict(ours, strict=True)


def build_classifier(name: str, num_classes: int = 1000, **backbone_kwargs) -> ImageClassifier:
    """A classification model by variant name (see :func:`~backbones.registry.variant_names`), e.g.
    ``'efficientformerv2_s0'``, at the family's ImageNet defaults (EfficientFormerV2:
    ``resolution=224``)."""
    try:
        variant = get_variant(name)
    except KeyError as err:
        raise ValueError(f'unknown classifier {name!r}; choose one of {variant_names()}') from err
    cls = variant.cls
    backbone_kwargs.setdefault('out_indices', (len(cls.arch_settings[variant.arch]['depths']) - 1,))
    return ImageClassifier(cls(arch=variant.arch, **backbone_kwargs), num_classes, cls.classifier_distillation)
