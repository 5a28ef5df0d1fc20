"""What is exported: a backbone alone, a Semantic FPN segmentor (image -> per-pixel class
logits at the input size), RetinaNet (backbone + neck + head -> raw class scores and box
deltas per level) and Mask R-CNN (backbone + neck + RPN -> FPN features and RPN scores /
deltas). These are the ``--raw`` exports: the end-to-end ones (:mod:`.contract`,
:mod:`.postprocess`, :mod:`.two_stage`) put decoding, NMS and the RoI stages in the graph; for
raw exports :func:`retinanet_postprocess` and :func:`mask_rcnn_postprocess` turn the outputs
into mmdet ``DetDataSample`` predictions on the host with mmdet's own heads.
"""
from __future__ import annotations

import os.path as osp
from dataclasses import dataclass
from typing import Any, Dict, Optional, Sequence, Tuple

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..checks import is_whole
from ..registry import get_variant, variant_names
from ..runtime.models import build_model_from_config
from .prepare import prepare_for_export


# ---------------------------------------------------------------------------- targets
class SegmentorLogits(nn.Module):
    """An mmseg EncoderDecoder as image -> per-pixel logits at the input size."""

    def __init__(self, segmentor: nn.Module) -> None:
        super().__init__()
        self.backbone = segmentor.backbone
        self.neck = segmentor.neck if segmentor.with_neck else None
        self.decode_head = segmentor.decode_head
        self.align_corners = segmentor.decode_head.align_corners

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        feats = self.backbone(x)
        if self.neck is not None:
            feats = self.neck(feats)
        logits = self.decode_head(feats)
        return F.interpolate(logits, size=x.shape[2:], mode='bilinear', align_corners=self.align_corners)


class DenseDetector(nn.Module):
    """The mobile part of an mmdet detector: backbone + neck + dense head outputs.

    RetinaNet: ``(*cls_scores, *bbox_preds)``, one per FPN level. Two-stage detectors:
    ``(*fpn_features, *rpn_cls_scores, *rpn_bbox_preds)``; the RoI stages follow in the graph
    (end to end, :mod:`.two_stage`) or on the host (``--raw``).
    """

    def __init__(self, detector: nn.Module) -> None:
        super().__init__()
        self.backbone = detector.backbone
        self.neck = detector.neck
        self.two_stage = hasattr(detector, 'rpn_head')
        self.head = detector.rpn_head if self.two_stage else detector.bbox_head

    def forward(self, x: torch.Tensor) -> Tuple[torch.Tensor, ...]:
        feats = self.neck(self.backbone(x))
        cls_scores, bbox_preds = self.head(feats)
        outputs = list(cls_scores) + list(bbox_preds)
        return tuple(list(feats) + outputs) if self.two_stage else tuple(outputs)


@dataclass
class Target:
    """A model to export and how to read its outputs."""
    name: str
    module: nn.Module                      # prepared for export, eval mode
    size: Tuple[int, int]
    full_model: Optional[nn.Module] = None  # the mmdet / mmseg model (host-side steps)
    kind: str = 'backbone'                 # backbone | segmentor | retinanet | two-stage
    #: what the artifact carries (end-to-end exports, :mod:`.contract`); None for raw exports
    meta: Optional[Dict[str, Any]] = None
    #: an input to trace with; None: a random float [1, 3, H, W]
    example: Optional[torch.Tensor] = None
    #: the weights loaded (a path or URL); None: random or the config's own
    checkpoint: Optional[str] = None

    @property
    def takes_images(self) -> bool:
        """The input is a uint8 image [1, H, W, 3] (end to end), not a float tensor."""
        return self.example is not None and self.example.dtype == torch.uint8


#: the smallest side an export takes: every family downsamples by 32
MIN_SIDE = 32
#: the normalisation of the configs' data preprocessors (ImageNet mean / std, RGB)
IMAGENET_MEAN = (123.675, 116.28, 103.53)
IMAGENET_STD = (58.395, 57.12, 57.375)


def package_version() -> str:
    """The installed edgeformers version, or 'unknown' (a checkout that is not installed)."""
    from importlib.metadata import PackageNotFoundError, version
    try:
        return version('edgeformers')
    except PackageNotFoundError:
        return 'unknown'


def check_size(size: Sequence[int]) -> None:
    """Raise a ValueError naming the problem when ``size`` (H, W) cannot be exported."""
    if len(size) != 2 or not all(is_whole(s) for s in size):
        raise ValueError(f'export size must be two integers (H, W), got {tuple(size)}')
    if min(size) < MIN_SIDE:
        raise ValueError(f'export size {size[0]}x{size[1]} is too small: the backbones downsample by {MIN_SIDE}, so '
                         f'each side needs at least {MIN_SIDE} pixels; export at the size the model will run at, '
                         f'e.g. --size 224 224')


def target_name(name_or_config: str) -> str:
    """The name :func:`build_target` gives: a variant name, or a config file's stem."""
    return osp.splitext(osp.basename(name_or_config))[0] if name_or_config.endswith('.py') else name_or_config


def build_target(name_or_config: str, size: Tuple[int, int], checkpoint: Optional[str] = None,
                 partial: bool = False, cfg_options: Optional[Dict[str, Any]] = None) -> Target:
    """A backbone by variant name (``edgevit_xxs`` ... ``efficientformerv2_l``, see
    :func:`~backbones.registry.variant_names`) or a detection / segmentation config file, with ``cfg_options``
    (config only) merged into the config first, as mmdet's tools take ``--cfg-options``.

    ``checkpoint`` is loaded strictly: one that does not fit the model is refused unless
    ``partial`` (which loads what fits and lists the rest)."""
    check_size(size)
    if cfg_options and name_or_config in variant_names():
        raise ValueError(f'{name_or_config} is a backbone name, not a config: config options '
                         f'({", ".join(cfg_options)}) apply to config files only')
    if name_or_config in variant_names():
        variant = get_variant(name_or_config)
        cfg = dict(arch=variant.arch, **variant.cls.size_kwargs(size))
        if checkpoint:
            cfg['init_cfg'] = dict(type='Pretrained', checkpoint=checkpoint, partial=partial)
        model = variant.cls(**cfg)
        if checkpoint:
            model.init_weights()
        return Target(name_or_config, prepare_for_export(model, size), tuple(size), checkpoint=checkpoint)
    if not osp.isfile(name_or_config):
        raise FileNotFoundError(f'{name_or_config!r} is neither a backbone name ({", ".join(variant_names())}) '
                                'nor a config file')
    if cfg_options:
        from ..runtime.models import warn_new_config_keys
        warn_new_config_keys(name_or_config, cfg_options)
    model, scope = build_model_from_config(name_or_config, cfg_options)
    if checkpoint:
        from ..checkpoints.loading import load_model_checkpoint
        load_model_checkpoint(model, checkpoint, partial=partial)
    model.eval()
    name = target_name(name_or_config)
    if scope == 'mmseg':
        module = SegmentorLogits(prepare_for_export(model, size))
        return Target(name, module.eval(), tuple(size), model, 'segmentor')
    deployed = prepare_for_export(model, size)
    module = DenseDetector(deployed).eval()
    return Target(name, module, tuple(size), model, 'two-stage' if module.two_stage else 'retinanet')


# ---------------------------------------------------------------------------- host-side steps
def retinanet_postprocess(detector: nn.Module, outputs: Sequence[torch.Tensor], img_meta: dict):
    """Exported RetinaNet outputs -> a DetDataSample, by mmdet's own head (anchors, decoding,
    score threshold, NMS), exactly as ``detector.predict`` does after the network."""
    from mmdet.structures import DetDataSample
    n = len(outputs) // 2
    results = detector.bbox_head.predict_by_feat(list(outputs[:n]), list(outputs[n:]), batch_img_metas=[img_meta],
                                                 rescale=True)
    sample = DetDataSample(metainfo=img_meta)
    sample.pred_instances = results[0]
    return sample


def mask_rcnn_postprocess(detector: nn.Module, outputs: Sequence[torch.Tensor], img_meta: dict):
    """Exported two-stage outputs (FPN features, RPN scores, RPN deltas) -> a DetDataSample:
    proposals by mmdet's RPN head, then the RoI heads (box and mask) on the host."""
    from mmdet.structures import DetDataSample
    num_levels = len(detector.rpn_head.prior_generator.strides)
    feats = list(outputs[:-2 * num_levels])
    rpn_cls = list(outputs[-2 * num_levels:-num_levels])
    rpn_reg = list(outputs[-num_levels:])
    sample = DetDataSample(metainfo=img_meta)
    with torch.no_grad():
        proposals = detector.rpn_head.predict_by_feat(rpn_cls, rpn_reg, batch_img_metas=[img_meta], rescale=False)
        results = detector.roi_head.predict(tuple(feats), proposals, [sample], rescale=True)
    sample.pred_instances = results[0]
    return sample
