"""The papers' figures (from ../shared/PAPERS.md), as data for tools and tests."""
from __future__ import annotations

from typing import Dict, List

import torch

from .classifier import CLASSIFIERS, build_classifier

#: ImageNet-1k at 224: params (M, with classifier), GMACs, top-1 (%). EdgeViT-S: the
#: official code's 1,2,5,3 model (13.1M); the paper's table prints 11.1M.
IMAGENET: Dict[str, Dict[str, str]] = {  # strings keep the precision the paper prints
    'edgevit_xxs': dict(params='4.1', gmacs='0.6', top1='74.4'),
    'edgevit_xs': dict(params='6.7', gmacs='1.1', top1='77.5'),
    'edgevit_s': dict(params='13.1', gmacs='1.9', top1='81.0'),
    'efficientformerv2_s0': dict(params='3.5', gmacs='0.40', top1='75.7'),
    'efficientformerv2_s1': dict(params='6.1', gmacs='0.65', top1='79.0'),
    'efficientformerv2_s2': dict(params='12.6', gmacs='1.25', top1='81.6'),
    'efficientformerv2_l': dict(params='26.1', gmacs='2.56', top1='83.3'),
}


def count_complexity(model: torch.nn.Module, height: int = 224, width: int = 224) -> Dict[str, float]:
    """Parameters (M) and GMACs at one input size, counted by mmengine's FlopAnalyzer.

    FlopAnalyzer counts one multiply-add as one "flop" (matrix products included), so its
    total is the papers' MACs.
    """
    from mmengine.analysis import FlopAnalyzer
    model = model.eval()
    with torch.no_grad():
        analyzer = FlopAnalyzer(model, (torch.zeros(1, 3, height, width),))
        analyzer.unsupported_ops_warnings(False)
        analyzer.uncalled_modules_warnings(False)
        gmacs = analyzer.total() / 1e9
    params = sum(p.numel() for p in model.parameters()) / 1e6
    return dict(params=params, gmacs=gmacs)


def agrees(measured: float, paper: str, tolerance: float) -> bool:
    """Equal at the precision the paper prints (``paper`` as printed), or within
    ``tolerance`` (relative)."""
    decimals = len(paper.split('.')[1]) if '.' in paper else 0
    value = float(paper)
    return f'{measured:.{decimals}f}' == paper or abs(measured - value) <= tolerance * value


def imagenet_table(names: List[str] = None) -> List[Dict[str, object]]:
    """One row per classification model: measured params / GMACs beside the paper's."""
    rows = []
    for name in names or list(CLASSIFIERS):
        measured = count_complexity(build_classifier(name))
        paper = IMAGENET[name]
        rows.append(dict(model=name, params=measured['params'], gmacs=measured['gmacs'],
                         paper_params=paper['params'], paper_gmacs=paper['gmacs'], top1=paper['top1'],
                         params_ok=agrees(measured['params'], paper['params'], 0.03),
                         gmacs_ok=agrees(measured['gmacs'], paper['gmacs'], 0.05)))
    return rows
