"""Build mmdet detectors around our backbones from the mmdet model zoo's base configs."""
from __future__ import annotations

import os
import tempfile
import textwrap
from typing import Dict, List

import torch

#: one default per family/arch, as used in the downstream configs
BACKBONE_CFGS: Dict[str, dict] = {
    'edgevit_xxs': dict(type='EdgeViT', arch='xxs'),
    'edgevit_xs': dict(type='EdgeViT', arch='xs'),
    'edgevit_s': dict(type='EdgeViT', arch='s'),
    'efficientformerv2_s0': dict(type='EfficientFormerV2', arch='s0', resolution=800),
    'efficientformerv2_s1': dict(type='EfficientFormerV2', arch='s1', resolution=800),
    'efficientformerv2_s2': dict(type='EfficientFormerV2', arch='s2', resolution=800),
    'efficientformerv2_l': dict(type='EfficientFormerV2', arch='l', resolution=800),
}


def build_retinanet(backbone_cfg: dict):
    """RetinaNet (mmdet's r50 1x COCO recipe) with ``backbone_cfg`` and a matching FPN."""
    from mmengine.config import Config
    from mmdet.registry import MODELS
    from mmdet.utils import register_all_modules

    from . import BACKBONES  # importing the package registers the backbones

    register_all_modules()
    cls = BACKBONES[backbone_cfg['type']]
    channels = list(cls.resolve_arch(backbone_cfg['arch'])['widths'])
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, 'retinanet.py')
        with open(path, 'w') as f:
            f.write(textwrap.dedent(f"""
                _base_ = 'mmdet::retinanet/retinanet_r50_fpn_1x_coco.py'
                custom_imports = dict(imports=['backbones'], allow_failed_imports=False)
                model = dict(backbone=dict(_delete_=True, **{backbone_cfg!r}),
                             neck=dict(in_channels={channels!r}))
            """))
        cfg = Config.fromfile(path)
    return MODELS.build(cfg.model)


def describe_retinanets(names: List[str], height: int, width: int) -> List[dict]:
    """Parameter counts and feature shapes of a RetinaNet per backbone."""
    rows = []
    for name in names:
        model = build_retinanet(BACKBONE_CFGS[name]).eval()
        with torch.no_grad():
            x = torch.zeros(1, 3, height, width)
            feats = model.backbone(x)
            pyramid = model.neck(feats)
        rows.append(dict(name=name, params=sum(p.numel() for p in model.parameters()) / 1e6,
                         backbone_params=sum(p.numel() for p in model.backbone.parameters()) / 1e6,
                         backbone=[tuple(f.shape[1:]) for f in feats],
                         fpn=[tuple(f.shape[1:]) for f in pyramid]))
    return rows
