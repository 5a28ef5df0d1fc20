"""End-to-end exports a phone app uses as they are.

Input ``image``: uint8 ``[1, H, W, 3]``, RGB, at the export size; layout, colour order and the
config's normalisation are inside the graph. Outputs: RetinaNet ``boxes`` float32 ``[K, 4]``
(x1, y1, x2, y2 in input pixels), ``scores`` float32 ``[K]``, ``labels`` int64 ``[K]``
(K = ``max_per_img``; rows past the detections have score 0 and label -1); Mask R-CNN the same
plus ``masks`` uint8 ``[K, H, W]`` (0 / 1, zero past the detections; :mod:`.two_stage`); Semantic FPN
``seg_map`` uint8 ``[1, H, W]``. :func:`metadata` is what every artifact carries.
"""
from __future__ import annotations

import json
from typing import Any, Dict, Optional, Sequence, Tuple

import torch
import torch.nn as nn

from ..fileio import atomic_path, write_json
from .postprocess import RetinaNetPostprocess
from .runner import decode_value, metadata_json_path
from .targets import DenseDetector, Target, package_version


def preprocessor_settings(model: nn.Module) -> Tuple[Tuple[float, ...], Tuple[float, ...], bool]:
    """(mean, std, bgr_to_rgb) of an mmdet / mmseg model's data preprocessor."""
    pre = model.data_preprocessor
    mean = tuple(float(f'{float(v):.7g}') for v in pre.mean.flatten()) if getattr(pre, '_enable_normalize', True) else (0., 0., 0.)
    std = tuple(float(f'{float(v):.7g}') for v in pre.std.flatten()) if getattr(pre, '_enable_normalize', True) else (1., 1., 1.)
    # mmengine / mmdet name it _channel_conversion, mmseg channel_conversion
    conversion = getattr(pre, '_channel_conversion', getattr(pre, 'channel_conversion', False))
    return mean, std, bool(conversion)


class ImageInput(nn.Module):
    """uint8 ``[1, H, W, 3]`` RGB -> the float ``[1, 3, H, W]`` the network was trained on.

    mmdet / mmseg load images BGR; ``bgr_to_rgb=True`` in the data preprocessor means the
    network sees RGB, which is what an RGB image already is. Otherwise the channels are
    reversed to BGR. Then ``(x - mean) / std`` exactly as the data preprocessor does."""

    def __init__(self, mean: Sequence[float], std: Sequence[float], bgr_to_rgb: bool = True) -> None:
        super().__init__()
        self.reverse = not bgr_to_rgb
        self.register_buffer('mean', torch.tensor(mean, dtype=torch.float32).view(1, 3, 1, 1), persistent=False)
        self.register_buffer('std', torch.tensor(std, dtype=torch.float32).view(1, 3, 1, 1), persistent=False)

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        x = image.permute(0, 3, 1, 2).to(torch.float32)
        if self.reverse:
            x = x.flip(1)
        return (x - self.mean) / self.std


class EndToEnd(nn.Module):
    """uint8 image -> :class:`ImageInput` -> ``network`` -> the task's outputs. Subclasses
    say what follows the network; :meth:`quantize_int8` quantises the network only."""

    def __init__(self, image_input: ImageInput, network: nn.Module) -> None:
        super().__init__()
        self.image_input = image_input
        self.network = network

    def quantize_int8(self, example: torch.Tensor, calibration: Sequence[torch.Tensor]) -> 'EndToEnd':
        """A copy whose network is int8 (XNNPACK quantizer, calibrated on ``calibration``
        uint8 images), with input conversion and post-processing left in float: box
        decoding, IoU and NMS keep their precision."""
        import copy
        from .convert import quantize_int8
        with torch.no_grad():
            network = quantize_int8(self.network, self.image_input(example),
                                    [self.image_input(image) for image in calibration])
        out = copy.copy(self)
        out._modules = dict(self._modules, network=network)
        return out


class EndToEndDetector(EndToEnd):
    """uint8 image -> ``(boxes, scores, labels)``: network, decoding and NMS in one graph."""

    def __init__(self, image_input: ImageInput, dense: DenseDetector, post: RetinaNetPostprocess) -> None:
        super().__init__(image_input, dense)
        self.post = post

    def forward(self, image: torch.Tensor):
        outputs = self.network(self.image_input(image))
        n = len(outputs) // 2
        return self.post(list(outputs[:n]), list(outputs[n:]))


class EndToEndMaskRCNN(EndToEnd):
    """uint8 image -> ``(boxes, scores, labels, masks)``: network, proposals, RoIAlign, box
    head, NMS, mask head and mask pasting in one graph (:mod:`.two_stage`)."""

    def __init__(self, image_input: ImageInput, dense: DenseDetector, post: nn.Module) -> None:
        super().__init__(image_input, dense)
        self.post = post

    def network_outputs(self, image: torch.Tensor):
        """``(FPN features, RPN scores, RPN deltas)``, each a list over the levels: what the
        post-processing reads."""
        outputs = self.network(self.image_input(image))
        n = len(outputs) // 3
        return list(outputs[:n]), list(outputs[n:2 * n]), list(outputs[2 * n:])

    def forward(self, image: torch.Tensor):
        return self.post(*self.network_outputs(image))


class EndToEndSegmentor(EndToEnd):
    """uint8 image -> ``seg_map`` uint8 ``[1, H, W]``, the argmax class after the resize."""

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        return self.network(self.image_input(image)).argmax(1).to(torch.uint8)


OUTPUT_NAMES = {'retinanet': ['boxes', 'scores', 'labels'], 'segmentor': ['seg_map'],
                'two-stage': ['boxes', 'scores', 'labels', 'masks']}


def class_names(model: nn.Module, kind: str) -> Tuple[str, ...]:
    """The dataset's class names (COCO for detectors, ADE20K for segmentors)."""
    meta = getattr(model, 'dataset_meta', None) or {}
    if meta.get('classes'):
        return tuple(meta['classes'])
    if kind == 'segmentor':
        from mmseg.datasets import ADE20KDataset
        return tuple(ADE20KDataset.METAINFO['classes'])
    from mmdet.datasets import CocoDataset
    return tuple(CocoDataset.METAINFO['classes'])


def end_to_end(target: Target, config: Optional[str] = None, checkpoint: Optional[str] = None,
               cfg_options: Optional[Dict[str, Any]] = None) -> Target:
    """The end-to-end version of a ``retinanet``, ``two-stage`` (Mask R-CNN) or ``segmentor``
    target (same name and size): uint8 image in, boxes / scores / labels (and masks) or seg_map
    out, with its metadata in ``meta`` (``cfg_options``: the overrides the target was built
    with, recorded there)."""
    model = target.full_model
    if target.kind not in OUTPUT_NAMES:
        raise NotImplementedError(f'{target.kind} targets have no end-to-end export yet (use --raw)')
    mean, std, bgr_to_rgb = preprocessor_settings(model)
    image_input = ImageInput(mean, std, bgr_to_rgb)
    h, w = target.size
    if target.kind == 'segmentor':
        module = EndToEndSegmentor(image_input, target.module)
        score_thr = None
    elif target.kind == 'two-stage':
        from .two_stage import MaskRCNNPostprocess, featmap_sizes
        post = MaskRCNNPostprocess(model, (h, w), featmap_sizes(target.module, (h, w)))
        module = EndToEndMaskRCNN(image_input, target.module, post)
        score_thr = post.score_thr
    else:
        with torch.no_grad():
            outs = target.module(torch.zeros(1, 3, h, w))
        sizes = [tuple(o.shape[-2:]) for o in outs[:len(outs) // 2]]
        post = RetinaNetPostprocess(model.bbox_head, (h, w), sizes)
        module = EndToEndDetector(image_input, target.module, post)
        score_thr = post.score_thr
    meta = metadata(target.kind, class_names(model, target.kind), (h, w), mean, std, score_thr,
                    config=config, checkpoint=checkpoint)
    if cfg_options:
        meta['cfg_options'] = {key: _plain(value) for key, value in cfg_options.items()}
    if target.kind == 'retinanet':
        meta.update(max_detections=post.max_per_img, iou_threshold=post.iou_threshold, nms_candidates=post.candidates)
    elif target.kind == 'two-stage':
        meta.update(max_detections=post.max_per_img, iou_threshold=post.iou_threshold, nms_candidates=post.candidates,
                    proposal_nms_iterations=post.rpn.iterations, proposals=post.rpn.count, proposal_iou_threshold=post.rpn.iou_threshold,
                    mask_threshold=post.mask_threshold)
    return Target(target.name, module.eval(), target.size, model, target.kind, meta=meta,
                  example=torch.zeros(1, h, w, 3, dtype=torch.uint8))


def metadata(kind: str, classes: Sequence[str], size: Tuple[int, int], mean: Sequence[float], std: Sequence[float],
             score_thr: Optional[float] = None, config: Optional[str] = None,
             checkpoint: Optional[str] = None) -> Dict[str, object]:
    """What every end-to-end artifact carries (ONNX metadata_props, Core ML user metadata,
    ``<name>.json`` beside a ``.pte``)."""
    return dict(task='segmentation' if kind == 'segmentor' else 'detection', classes=list(classes),
                num_classes=len(classes),
                input_name='image', input_size=[int(size[0]), int(size[1])], input_layout='NHWC',
                input_dtype='uint8', color_order='RGB', mean=list(mean), std=list(std), score_threshold=score_thr,
                outputs=OUTPUT_NAMES[kind], config=config, checkpoint=checkpoint or None,
                weights='checkpoint' if checkpoint else 'random', edgeformers_version=package_version())


def _plain(value: Any) -> Any:
    """A ``--cfg-options`` value as JSON holds it (mmengine's DictAction gives tuples)."""
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    return value


# ---------------------------------------------------------------------------- artifacts
def attach_metadata(path: str, meta: Dict[str, object]) -> None:
    """Write ``meta`` into / beside an exported file: ONNX ``metadata_props`` (each value
    JSON-encoded; the outputs also get their names), Core ML user metadata and class labels,
    a JSON file beside anything else."""
    if path.endswith('.onnx'):
        import onnx
        model = onnx.load(path)
        _rename_onnx_outputs(model, list(meta.get('outputs') or []))
        del model.metadata_props[:]
        for key, value in meta.items():
            entry = model.metadata_props.add()
            entry.key, entry.value = key, json.dumps(value)
        with atomic_path(path) as tmp:
            onnx.save(model, tmp)
    elif path.endswith('.mlpackage'):  # with the Core ML input / output types (.coreml)
        from .coreml import attach_metadata as attach_coreml
        attach_coreml(path, meta)
    else:
        write_json(metadata_json_path(path), meta, indent=1)


def read_metadata(path: str) -> Dict[str, object]:
    """The metadata :func:`attach_metadata` wrote, of any export (backbones included)."""
    if path.endswith('.onnx'):
        import onnx
        props = onnx.load(path, load_external_data=False).metadata_props
        return {p.key: decode_value(p.value) for p in props}
    if path.endswith('.mlpackage'):
        import coremltools as ct
        meta = ct.models.MLModel(path, skip_model_load=True).user_defined_metadata
        return {k: decode_value(v) for k, v in meta.items() if not k.startswith('com.')}
    with open(metadata_json_path(path)) as f:
        return json.load(f)


def _rename_onnx_outputs(model, names) -> None:
    graph = model.graph
    for output, name in zip(graph.output, names):
        old = output.name
        if old == name:
            continue
        for node in graph.node:
            for i, value in enumerate(node.output):
                if value == old:
                    node.output[i] = name
            for i, value in enumerate(node.input):
                if value == old:
                    node.input[i] = name
        output.name = name


def export_end_to_end(target: Target, fmt: str, out_dir: str, example: Optional[torch.Tensor] = None,
                      calibration: Optional[Sequence[torch.Tensor]] = None):
    """Export an :func:`end_to_end` target to ``fmt`` (parity-checked against eager where the
    format runs here) and attach its metadata. ``calibration``: uint8 images for int8.
    Returns the :class:`ExportResult`."""
    from .convert import export
    result = export(target, fmt, out_dir, example=example if example is not None else target.example,
                    calibration=calibration)
    attach_metadata(result.path, target.meta)
    return result


# ---------------------------------------------------------------------------- the export tool
def export_formats(target: Target, formats: Sequence[str], out_dir: str, force: bool = False, calibration=None,
                   log=print) -> int:
    """Export ``target`` to each format: an existing file is kept unless ``force``; a format
    that fails is reported with its reason and the others still run. Returns the number of
    formats that failed (or were skipped for a missing extra)."""
    import os.path as osp
    from .convert import export, export_path
    from .formats import MissingExtra
    failed = 0
    for fmt in formats:
        try:
            path = export_path(target.name, fmt, target.size, out_dir)
            if osp.isdir(path) and not path.endswith('.mlpackage'):
                log(f'{fmt:<16} refused: {path} is a folder, not an earlier export; nothing was replaced or '
                    'deleted (move it away, or choose another --out-dir)')
                failed += 1
                continue
            if osp.exists(path) and not force:
                log(f'{fmt:<16} kept existing {path} (--force to overwrite)')
                continue
            result = export(target, fmt, out_dir, example=target.example, calibration=calibration)
            if target.meta is not None:
                attach_metadata(result.path, target.meta)
            log(result.describe())
        except MissingExtra as err:
            log(f'{fmt:<16} skipped: {err}')
            failed += 1
        except Exception as err:  # noqa: BLE001  (report, go on with the other formats)
            log(f'{fmt:<16} FAILED: {type(err).__name__}: {str(err).strip().splitlines()[0] if str(err).strip() else ""}')
            failed += 1
    return failed
