"""Parameters and FLOPs of whole detectors / segmentors from their configs.

FLOPs are counted by mmengine's FlopAnalyzer (one multiply-add = 1, as the papers count),
on the model's tensor-mode forward: backbone, neck and heads (for two-stage detectors the
RoI heads on the RPN's proposals, as mmdet's own get_flops does).
"""
from __future__ import annotations

import os
import os.path as osp
import re
from typing import Dict, List, Optional, Tuple

import torch

from .engine import load_config
from .export import image_meta

#: the papers' input sizes (H, W)
PAPER_SHAPES = {'mmdet': (800, 1280), 'mmseg': (512, 512)}

#: the papers' figures for whole models (params M, GFLOPs), by config name (from PAPERS.md)
PAPER_MODELS: Dict[str, Dict[str, str]] = {
    'retinanet_edgevit-xxs_fpn_8xb2-1x_coco': dict(params='13.1', box_ap='38.7'),
    'retinanet_edgevit-xs_fpn_8xb2-1x_coco': dict(params='16.3', box_ap='40.6'),
    'retinanet_edgevit-s_fpn_8xb2-1x_coco': dict(params='22.6', box_ap='43.4'),
    'mask-rcnn_edgevit-xxs_fpn_8xb2-1x_coco': dict(params='23.8', box_ap='39.9', mask_ap='36.9'),
    'mask-rcnn_edgevit-xs_fpn_8xb2-1x_coco': dict(params='26.5', box_ap='41.4', mask_ap='38.3'),
    'mask-rcnn_edgevit-s_fpn_8xb2-1x_coco': dict(params='32.8', box_ap='44.8', mask_ap='41.0'),
    'mask-rcnn_efficientformerv2-s2_fpn_8xb2-1x_coco': dict(box_ap='43.4', mask_ap='39.5'),
    'mask-rcnn_efficientformerv2-l_fpn_8xb2-1x_coco': dict(box_ap='44.7', mask_ap='40.4'),
    'fpn_edgevit-xxs_8xb4-40k_ade20k-512x512': dict(params='7.9', gflops='24.4', miou='39.7'),
    'fpn_edgevit-xs_8xb4-40k_ade20k-512x512': dict(params='10.6', gflops='27.7', miou='41.4'),
    'fpn_edgevit-s_8xb4-40k_ade20k-512x512': dict(params='16.9', gflops='32.1', miou='45.9'),
    'fpn_efficientformerv2-s2_8xb4-40k_ade20k-512x512': dict(miou='42.4'),
    'fpn_efficientformerv2-l_8xb4-40k_ade20k-512x512': dict(miou='45.2'),
}


def build_model_from_config(config: str):
    """The model of an mmdet / mmseg config, with its toolbox's modules registered."""
    import backbones  # noqa: F401  (registers the backbones)
    cfg = load_config(config)
    scope = cfg.get('default_scope', 'mmdet')
    if scope == 'mmseg':
        from mmseg.registry import MODELS
        from mmseg.utils import register_all_modules
    else:
        from mmdet.registry import MODELS
        from mmdet.utils import register_all_modules
    register_all_modules(init_default_scope=True)
    cfg.model.get('backbone', {}).pop('init_cfg', None)
    return MODELS.build(cfg.model), scope


class _TensorForward(torch.nn.Module):
    """The tensor-mode forward of an mmdet / mmseg model on one normalised image."""

    def __init__(self, model, scope: str, shape: Tuple[int, int]) -> None:
        super().__init__()
        self.model, self.scope, self.shape = model, scope, shape

    def forward(self, x):
        meta = image_meta(self.shape)
        if self.scope == 'mmseg':
            from mmseg.structures import SegDataSample
            sample = SegDataSample(metainfo=meta)
        else:
            from mmdet.structures import DetDataSample
            sample = DetDataSample(metainfo=meta)
        out = self.model(x, [sample], mode='tensor')
        return _flatten(out)


def _flatten(out) -> List[torch.Tensor]:
    if isinstance(out, torch.Tensor):
        return [out]
    if isinstance(out, dict):
        out = list(out.values())
    flat = []
    for item in out:
        flat.extend(_flatten(item) if not isinstance(item, torch.Tensor) else [item])
    return flat


def model_complexity(config: str, shape: Optional[Tuple[int, int]] = None) -> Dict[str, float]:
    """Params (M) and GFLOPs of the config's model at ``shape`` (default: the paper's)."""
    from mmengine.analysis import FlopAnalyzer
    model, scope = build_model_from_config(config)
    shape = tuple(shape or PAPER_SHAPES[scope])
    model.eval()
    with torch.no_grad():
        analyzer = FlopAnalyzer(_TensorForward(model, scope, shape), (torch.zeros(1, 3, *shape),))
        analyzer.unsupported_ops_warnings(False)
        analyzer.uncalled_modules_warnings(False)
        flops = analyzer.total()
        backbone_flops = analyzer.by_module().get('model.backbone', 0)
    params = sum(p.numel() for p in model.parameters()) / 1e6
    backbone_params = sum(p.numel() for p in model.backbone.parameters()) / 1e6
    return dict(params=params, gflops=flops / 1e9, backbone_params=backbone_params,
                backbone_gflops=backbone_flops / 1e9, height=shape[0], width=shape[1])


def config_name(path: str) -> str:
    return osp.splitext(osp.basename(path))[0]


def all_configs(root: str) -> List[str]:
    out = []
    for task in ('detection', 'segmentation'):
        folder = osp.join(root, 'configs', task)
        out += sorted(osp.join(folder, f) for f in os.listdir(folder) if f.endswith('.py'))
    return out


def backbone_label(path: str) -> str:
    m = re.search(r'_(edgevit|efficientformerv2)-(\w+?)_', osp.basename(path))
    names = {'edgevit': 'EdgeViT', 'efficientformerv2': 'EfficientFormerV2'}
    return f'{names[m.group(1)]}-{m.group(2).upper()}' if m else '?'


PAPERS = {
    'EdgeViT': dict(title='EdgeViTs: Competing Light-weight CNNs on Mobile Devices with Vision Transformers',
                    url='https://arxiv.org/abs/2205.03436', code='https://github.com/saic-fi/edgevit'),
    'EfficientFormerV2': dict(title='Rethinking Vision Transformers for MobileNet Size and Speed',
                              url='https://arxiv.org/abs/2212.08059',
                              code='https://github.com/snap-research/EfficientFormer'),
}


def metafile(rows: List[Tuple[str, Dict[str, float]]]) -> str:
    """An OpenMMLab ``metafile.yml`` (collections + models) from measured (config, complexity)."""
    lines = ['Collections:']
    for name, paper in PAPERS.items():
        lines += [f'  - Name: {name}', '    Metadata:', '      Training Data:', '        - COCO', '        - ADE20K',
                  '      Architecture:', f'        - {name}', '    Paper:', f"      Title: '{paper['title']}'",
                  f"      URL: {paper['url']}", '    Code:', f"      URL: {paper['code']}", '    README: README.md']
    lines.append('Models:')
    for path, c in rows:
        name = config_name(path)
        family = 'EdgeViT' if '_edgevit-' in name else 'EfficientFormerV2'
        seg = name.startswith('fpn_')
        paper = PAPER_MODELS.get(name, {})
        lines += [f'  - Name: {name}', f'    In Collection: {family}',
                  f'    Config: configs/{osp.basename(osp.dirname(path))}/{osp.basename(path)}',
                  '    Metadata:', f"      Training Data: {'ADE20K' if seg else 'COCO'}",
                  f"      Batch Size: {32 if seg else 16}",
                  f"      {'Iterations: 40000' if seg else 'Epochs: 12'}",
                  f"      Parameters: {c['params'] * 1e6:.0f}",
                  f"      FLOPs: {c['gflops'] * 1e9:.0f}",
                  f"      Input Size: {c['height']}x{c['width']}"]
        results = []
        if 'box_ap' in paper:
            metrics = [f"          box AP: {paper['box_ap']}"]
            results += ['      - Task: Object Detection', '        Dataset: COCO', '        Metrics:'] + metrics
        if 'mask_ap' in paper:
            results += ['      - Task: Instance Segmentation', '        Dataset: COCO', '        Metrics:',
                        f"          mask AP: {paper['mask_ap']}"]
        if 'miou' in paper:
            results += ['      - Task: Semantic Segmentation', '        Dataset: ADE20K', '        Metrics:',
                        f"          mIoU: {paper['miou']}"]
        if results:
            lines += ['    Results:  # as published (no weights of ours yet)'] + results
    return '\n'.join(lines) + '\n'
