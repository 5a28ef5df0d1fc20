"""The OpenMMLab ``metafile.yml`` (model-index format): collections per family, one model per
config with its measured parameters and FLOPs and the papers' published results."""
from __future__ import annotations

import os.path as osp
from typing import Dict, List, Tuple

from ..registry import FAMILIES, variant_of_config
from .complexity import config_name
from ..registry import downstream_figures


def metafile(rows: List[Tuple[str, Dict[str, float]]]) -> str:
    """An OpenMMLab ``metafile.yml`` (collections + models) from measured (config, complexity)."""
    lines = ['Collections:']
    for name, cls in FAMILIES.items():
        paper = cls.paper
        if paper is None:
            continue
        lines += [f'  - Name: {name}', '    Metadata:', '      Training Data:', '        - COCO', '        - ADE20K',
                  '      Architecture:', f'        - {name}', '    Paper:', f"      Title: '{paper.title}'",
                  f"      URL: {paper.url}", '    Code:', f"      URL: {paper.code}", '    README: README.md']
    lines.append('Models:')
    for path, c in rows:
        name = config_name(path)
        variant = variant_of_config(name)
        family = variant.family if variant else '?'
        seg = name.startswith('fpn_')
        paper = downstream_figures().get(name, {})
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
