"""Export to mobile runtimes, with parity checks against eager PyTorch.

Targets (:func:`build_target`): a backbone alone; a Semantic FPN segmentor (image ->
per-pixel class logits at the input size); RetinaNet (backbone + neck + head -> raw class
scores and box deltas per level) and Mask R-CNN (backbone + neck + RPN -> FPN features and
RPN scores / deltas). What does not belong in a mobile graph (anchor decoding, NMS, RoI
stages) runs on the host: :func:`retinanet_postprocess` and :func:`mask_rcnn_postprocess`
turn the exported outputs into mmdet ``DetDataSample`` predictions with mmdet's own heads.

XNNPACK delegates every operator of both backbone families (after
:func:`backbones.deploy.prepare_for_export`). In detectors, mmdet's FPN upsamples by nearest
neighbour, which XNNPACK does not delegate: those two to four ops run on ExecuTorch's portable
kernels.

Formats (:func:`export`): ExecuTorch ``.pte`` with the XNNPACK delegate (fp32, or int8
through the XNNPACK pt2e quantizer with a calibration set), ONNX (run by onnxruntime),
Core ML ``.mlpackage`` (converted here; predicting needs macOS) and TFLite through
litert-torch when it is installed. Export packages are the optional extra
``pip install .[export]`` (TFLite: ``.[tflite]``).
"""
from __future__ import annotations

import numbers
import os
import os.path as osp
import time
from dataclasses import dataclass, field
from typing import Dict, List, Optional, Sequence, Tuple

import torch
import torch.nn as nn
import torch.nn.functional as F

from .deploy import prepare_for_export

FORMATS = ('executorch', 'executorch-int8', 'onnx', 'coreml', 'tflite')
EXTRAS = {'executorch': 'export', 'executorch-int8': 'export', 'onnx': 'export', 'coreml': 'export',
          'tflite': 'tflite'}
_MODULES = {'executorch': 'executorch', 'executorch-int8': 'executorch', 'onnx': 'onnxruntime',
            'coreml': 'coremltools', 'tflite': 'litert_torch'}


class MissingExtra(RuntimeError):
    pass


def require(fmt: str) -> None:
    """Raise a clear error when the packages of an export format are not installed."""
    import importlib.util
    module = _MODULES[fmt]
    if importlib.util.find_spec(module) is None:
        raise MissingExtra(f'exporting to {fmt} needs the {module!r} package: pip install "edgeformers[{EXTRAS[fmt]}]" '
                           f'(from a checkout: .venv/bin/pip install -e ".[{EXTRAS[fmt]}]")')


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
    ``(*fpn_features, *rpn_cls_scores, *rpn_bbox_preds)``; the RoI stages run on the host.
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


#: the smallest side an export takes: both families downsample by 32
MIN_SIDE = 32


def check_size(size: Sequence[int]) -> None:
    """Raise a ValueError naming the problem when ``size`` (H, W) cannot be exported."""
    if len(size) != 2 or any(isinstance(s, bool) or not isinstance(s, numbers.Integral) for s in size):
        raise ValueError(f'export size must be two integers (H, W), got {tuple(size)}')
    if min(size) < MIN_SIDE:
        raise ValueError(f'export size {size[0]}x{size[1]} is too small: the backbones downsample by {MIN_SIDE}, so '
                         f'each side needs at least {MIN_SIDE} pixels; export at the size the model will run at, '
                         f'e.g. --size 224 224')


def build_target(name_or_config: str, size: Tuple[int, int], checkpoint: Optional[str] = None) -> Target:
    """A backbone by name (``edgevit_xxs`` ... ``efficientformerv2_l``, see
    :data:`backbones.detectors.BACKBONE_CFGS`) or a detection / segmentation config file."""
    from .detectors import BACKBONE_CFGS
    check_size(size)
    if name_or_config in BACKBONE_CFGS:
        from . import BACKBONES
        cfg = dict(BACKBONE_CFGS[name_or_config])
        cls = BACKBONES[cfg.pop('type')]
        if cls.__name__ == 'EfficientFormerV2':
            cfg['resolution'] = max(size)
        if checkpoint:
            cfg['init_cfg'] = dict(type='Pretrained', checkpoint=checkpoint)
        model = cls(**cfg)
        if checkpoint:
            model.init_weights()
        return Target(name_or_config, prepare_for_export(model, size), tuple(size))
    if not osp.isfile(name_or_config):
        raise FileNotFoundError(f'{name_or_config!r} is neither a backbone name ({", ".join(BACKBONE_CFGS)}) '
                                'nor a config file')
    from .flops import build_model_from_config
    model, scope = build_model_from_config(name_or_config)
    if checkpoint:
        from mmengine.runner import load_checkpoint
        load_checkpoint(model, checkpoint, map_location='cpu')
    model.eval()
    name = target_name(name_or_config)
    if scope == 'mmseg':
        module = SegmentorLogits(prepare_for_export(model, size))
        return Target(name, module.eval(), tuple(size), model, 'segmentor')
    deployed = prepare_for_export(model, size)
    module = DenseDetector(deployed).eval()
    return Target(name, module, tuple(size), model, 'two-stage' if module.two_stage else 'retinanet')


# ---------------------------------------------------------------------------- host-side steps
def image_meta(size: Tuple[int, int], ori_shape: Optional[Tuple[int, int]] = None,
               scale_factor: Tuple[float, float] = (1.0, 1.0)) -> dict:
    """The mmdet image meta of one unpadded ``size`` input (what the host steps need)."""
    return dict(img_shape=tuple(size), ori_shape=tuple(ori_shape or size), pad_shape=tuple(size),
                batch_input_shape=tuple(size), scale_factor=scale_factor)


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


# ---------------------------------------------------------------------------- formats
@dataclass
class ExportResult:
    fmt: str
    path: str
    size_bytes: int
    seconds: float
    max_abs_diff: Optional[float] = None
    max_rel_diff: Optional[float] = None
    delegated_fraction: Optional[float] = None
    not_delegated: Dict[str, int] = field(default_factory=dict)
    note: str = ''

    def describe(self) -> str:
        parts = [f'{self.fmt:<16} {self.path}  {self.size_bytes / 1e6:.2f} MB  export {self.seconds:.1f}s']
        if self.delegated_fraction is not None:
            parts.append(f'XNNPACK-delegated ops {self.delegated_fraction:.1%}'
                         + (f' (not delegated: {self.not_delegated})' if self.not_delegated else ''))
        if self.max_abs_diff is not None:
            parts.append(f'vs eager: max abs {self.max_abs_diff:.2e}, max rel {self.max_rel_diff:.2e}')
        if self.note:
            parts.append(self.note)
        return '\n    '.join(parts)


def _flat(out) -> List[torch.Tensor]:
    return list(out) if isinstance(out, (tuple, list)) else [out]


def compare(eager: Sequence[torch.Tensor], exported: Sequence[torch.Tensor]) -> Tuple[float, float]:
    """Max absolute difference, and max difference relative to each output's largest value."""
    abs_diff = rel_diff = 0.0
    for a, b in zip(eager, exported):
        b = torch.as_tensor(b).reshape(a.shape).to(a.dtype)
        d = (a - b).abs().max().item()
        abs_diff = max(abs_diff, d)
        rel_diff = max(rel_diff, d / max(a.abs().max().item(), 1e-12))
    return abs_diff, rel_diff


def _op_name(node) -> str:
    target = str(node.target)
    return target.split(':')[1].split('(')[0].strip(' >') if ':' in target else target


def _counts(node) -> bool:
    """An operator of the model (not bookkeeping: tuple access, the int8 model's
    (de)quantisation at delegate edges, delegate calls)."""
    target = str(node.target)
    return node.op == 'call_function' and not any(
        k in target for k in ('getitem', 'executorch_call_delegate', 'quantize_per', 'dequantize_per'))


def _lower_executorch(exported, path: str) -> Tuple[float, Dict[str, int]]:
    """Lower to XNNPACK and write the .pte; returns the share of operators delegated and
    the operators left to ExecuTorch's portable kernels."""
    from executorch.backends.xnnpack.partition.xnnpack_partitioner import XnnpackPartitioner
    from executorch.exir import to_edge_transform_and_lower
    edge = to_edge_transform_and_lower(exported, partitioner=[XnnpackPartitioner()])
    graph_module = edge.exported_program().graph_module
    delegated = 0
    left: Dict[str, int] = {}
    for node in graph_module.graph.nodes:
        if node.op == 'get_attr' and node.name.startswith('lowered_module'):
            lowered = getattr(graph_module, node.target)
            delegated += sum(1 for n in lowered.original_module.graph.nodes if _counts(n))
        elif _counts(node):
            left[_op_name(node)] = left.get(_op_name(node), 0) + 1
    with open(path, 'wb') as f:
        f.write(edge.to_executorch().buffer)
    return delegated / max(delegated + sum(left.values()), 1), left


def run_executorch(path: str, x: torch.Tensor) -> List[torch.Tensor]:
    from executorch.extension.pybindings import portable_lib
    module = portable_lib._load_for_executorch(path)
    return list(module.forward((x,)))


def run_onnx(path: str, x: torch.Tensor) -> List[torch.Tensor]:
    import onnxruntime as ort
    session = ort.InferenceSession(path, providers=['CPUExecutionProvider'])
    name = session.get_inputs()[0].name
    return [torch.from_numpy(o) for o in session.run(None, {name: x.numpy()})]


def quantize_int8(module: nn.Module, example: torch.Tensor, calibration: Sequence[torch.Tensor]):
    """Static int8 (per-channel weights, per-tensor activations) with the XNNPACK quantizer."""
    from executorch.backends.xnnpack.quantizer.xnnpack_quantizer import (XNNPACKQuantizer,
                                                                         get_symmetric_quantization_config)
    from torchao.quantization.pt2e.quantize_pt2e import convert_pt2e, prepare_pt2e
    graph = torch.export.export(module, (example,)).module()
    quantizer = XNNPACKQuantizer().set_global(get_symmetric_quantization_config(is_per_channel=True))
    prepared = prepare_pt2e(graph, quantizer)
    with torch.no_grad():
        for batch in calibration:
            prepared(batch)
    return convert_pt2e(prepared)


_SUFFIX = {'executorch': '.pte', 'executorch-int8': '_int8.pte', 'onnx': '.onnx', 'coreml': '.mlpackage',
           'tflite': '.tflite'}


def target_name(name_or_config: str) -> str:
    """The name :func:`build_target` gives: a backbone name, or a config file's stem."""
    return osp.splitext(osp.basename(name_or_config))[0] if name_or_config.endswith('.py') else name_or_config


def export_path(name: str, fmt: str, size: Tuple[int, int], out_dir: str) -> str:
    """Where :func:`export` writes ``name`` (a target name) in ``fmt`` at ``size``."""
    return osp.join(out_dir, f'{name}_{size[0]}x{size[1]}{_SUFFIX[fmt]}')


def export(target: Target, fmt: str, out_dir: str, example: Optional[torch.Tensor] = None,
           calibration: Optional[Sequence[torch.Tensor]] = None) -> ExportResult:
    """Export ``target`` to ``fmt`` under ``out_dir`` and check it against eager PyTorch."""
    if fmt not in FORMATS:
        raise ValueError(f'unknown format {fmt!r}; choose from {FORMATS}')
    require(fmt)
    os.makedirs(out_dir, exist_ok=True)
    h, w = target.size
    x = example if example is not None else torch.rand(1, 3, h, w, generator=torch.Generator().manual_seed(0))
    module = target.module.eval()
    start = time.time()
    path = export_path(target.name, fmt, (h, w), out_dir)
    if fmt == 'executorch-int8':
        calib = calibration or [torch.rand(1, 3, h, w, generator=torch.Generator().manual_seed(i)) for i in range(8)]
        module = quantize_int8(module, x, calib)  # the parity check compares with the quantised model
    if fmt != 'coreml':
        with torch.no_grad():
            eager = _flat(module(x))
    if fmt in ('executorch', 'executorch-int8'):
        fraction, left = _lower_executorch(torch.export.export(module, (x,)), path)
        outputs = run_executorch(path, x)
        result = ExportResult(fmt, path, os.path.getsize(path), time.time() - start, delegated_fraction=fraction,
                              not_delegated=left)
    elif fmt == 'onnx':
        torch.onnx.export(module, (x,), path, opset_version=18, dynamo=True, external_data=False,
                          input_names=['image'])
        outputs = run_onnx(path, x)
        result = ExportResult(fmt, path, os.path.getsize(path), time.time() - start)
    elif fmt == 'coreml':
        import coremltools as ct
        exported = torch.export.export(module, (x,)).run_decompositions({})
        mlmodel = ct.convert(exported, convert_to='mlprogram', minimum_deployment_target=ct.target.iOS17)
        mlmodel.save(path)
        size = sum(os.path.getsize(osp.join(d, f)) for d, _, fs in os.walk(path) for f in fs)
        return ExportResult(fmt, path, size, time.time() - start,
                            note='converted; running a Core ML model needs macOS, so no parity check here')
    else:  # tflite
        import litert_torch
        edge_model = litert_torch.convert(module, (x,))
        edge_model.export(path)
        outputs = _flat(edge_model(x))
        result = ExportResult(fmt, path, os.path.getsize(path), time.time() - start)
    result.max_abs_diff, result.max_rel_diff = compare(eager, outputs)
    return result
