"""Parameters and FLOPs: of the classification models (against the papers' ImageNet table),
and of whole detectors / segmentors from their configs.

FLOPs are counted by mmengine's FlopAnalyzer (one multiply-add = 1, as the papers count),
on the model's tensor-mode forward: backbone, neck and heads (for two-stage detectors the
RoI heads on the RPN's proposals, as mmdet's own get_flops does).
"""
from __future__ import annotations

import os
import os.path as osp
from typing import Dict, List, Optional, Sequence, Tuple

import torch

from ..classifier import build_classifier
from ..registry import downstream_figures, get_variant, variant_names, variant_of_config
from ..runtime.models import build_model_from_config, build_retinanet, image_meta
from .papers import PAPER_SHAPES, agrees


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


def imagenet_table(names: Optional[Sequence[str]] = None) -> List[Dict[str, object]]:
    """One row per classification model (default: every registered variant): measured params
    and GMACs at 224 beside the paper's (``None`` where the paper gives none)."""
    rows = []
    for name in names or variant_names():
        measured = count_complexity(build_classifier(name))
        paper = get_variant(name).imagenet
        row = dict(model=name, params=measured['params'], gmacs=measured['gmacs'], paper_params=paper.get('params'),
                   paper_gmacs=paper.get('gmacs'), top1=paper.get('top1'))
        row['params_ok'] = paper.get('params') is None or agrees(measured['params'], paper['params'], 0.03)
        row['gmacs_ok'] = paper.get('gmacs') is None or agrees(measured['gmacs'], paper['gmacs'], 0.05)
        rows.append(row)
    return rows


def format_imagenet_table(rows: Sequence[Dict[str, object]]) -> str:
    lines = [f'{"model":<22} {"params (M)":>10} {"paper":>6} {"GMACs":>7} {"paper":>6} {"top-1":>6}  agrees']
    for r in rows:
        ok = 'yes' if r['params_ok'] and r['gmacs_ok'] else 'NO'
        lines.append(f'{r["model"]:<22} {r["params"]:>10.2f} {r["paper_params"] or "-":>6} {r["gmacs"]:>7.3f} '
                     f'{r["paper_gmacs"] or "-":>6} {r["top1"] or "-":>6}  {ok}')
    lines.append('Counted with classifier at 224x224; MACs by mmengine FlopAnalyzer (a multiply-add = 1).')
    return '\n'.join(lines)


def describe_retinanets(names: Sequence[str], height: int, width: int) -> List[dict]:
    """Parameter counts and feature shapes of a RetinaNet per variant."""
    rows = []
    for name in names:
        model = build_retinanet(name, (height, width)).eval()
        with torch.no_grad():
            x = torch.zeros(1, 3, height, width)
            feats = model.backbone(x)
            pyramid = model.neck(feats)
        rows.append(dict(name=name, params=sum(p.numel() for p in model.parameters()) / 1e6,
                         backbone_params=sum(p.numel() for p in model.backbone.parameters()) / 1e6,
                         backbone=[tuple(f.shape[1:]) for f in feats],
                         fpn=[tuple(f.shape[1:]) for f in pyramid]))
    return rows


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


def config_paper(path: str) -> Dict[str, str]:
    """The paper's figures for a config (empty when it gives none)."""
    return downstream_figures().get(config_name(path), {})


def all_configs(folders: Sequence[str]) -> List[str]:
    """The config files directly in each of ``folders`` (the tools pass the checkout's
    ``configs/detection`` and ``configs/segmentation``), sorted per folder."""
    out = []
    for folder in folders:
        out += sorted(osp.join(folder, f) for f in os.listdir(folder) if f.endswith('.py'))
    return out


def backbone_label(path: str) -> str:
    """The papers' name of a config's backbone, e.g. ``EdgeViT-XXS``."""
    variant = variant_of_config(config_name(path))
    return variant.label if variant else '?'


def complexity_rows(configs: Sequence[str], shape: Optional[Tuple[int, int]] = None, log=None) -> List[dict]:
    """One row per config: measured params / GFLOPs and the paper's figures."""
    rows = []
    for path in configs:
        row = dict(path=path, name=config_name(path), backbone=backbone_label(path), paper=config_paper(path),
                   **model_complexity(path, shape))
        rows.append(row)
        if log:
            log(format_complexity_row(row))
    return rows


def format_complexity_row(r: dict) -> str:
    p = r['paper']
    return (f'{r["name"]:<52} {r["params"]:>7.2f}M {r["gflops"]:>8.1f}G  '
            f'paper: {p.get("params", "-"):>5}M {p.get("gflops", "-"):>5}G  '
            f'AP {p.get("box_ap", "-")} mask {p.get("mask_ap", "-")} mIoU {p.get("miou", "-")}')


def format_complexity_markdown(rows: Sequence[dict]) -> str:
    lines = ['| config | backbone | params (M) | paper | GFLOPs | paper | paper box AP | mask AP | mIoU |',
             '|---|---|---|---|---|---|---|---|---|']
    for r in rows:
        p = r['paper']
        lines.append(f'| `{r["name"]}` | {r["backbone"]} | {r["params"]:.1f} | {p.get("params", "—")} | '
                     f'{r["gflops"]:.1f} | {p.get("gflops", "—")} | {p.get("box_ap", "—")} | '
                     f'{p.get("mask_ap", "—")} | {p.get("miou", "—")} |')
    return '\n'.join(lines)
