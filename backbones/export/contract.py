"""End-to-end exports a phone app uses as they are (issue 11).

Input ``image``: uint8 ``[1, H, W, 3]``, RGB, at the export size; layout, colour order and the
config's normalisation are inside the graph. Outputs: RetinaNet ``boxes`` float32 ``[K, 4]``
(x1, y1, x2, y2 in input pixels), ``scores`` float32 ``[K]``, ``labels`` int64 ``[K]``
(K = ``max_per_img``; rows past the detections have score 0 and label -1); Semantic FPN
``seg_map`` uint8 ``[1, H, W]``. :func:`metadata` is what every artifact carries.
"""
from __future__ import annotations

from typing import Dict, Optional, Sequence, Tuple

import torch
import torch.nn as nn

from .postprocess import RetinaNetPostprocess
from .targets import DenseDetector, SegmentorLogits, Target


def preprocessor_settings(model: nn.Module) -> Tuple[Tuple[float, ...], Tuple[float, ...], bool]:
    """(mean, std, bgr_to_rgb) of an mmdet / mmseg model's data preprocessor."""
    pre = model.data_preprocessor
    mean = tuple(float(v) for v in pre.mean.flatten()) if getattr(pre, '_enable_normalize', True) else (0., 0., 0.)
    std = tuple(float(v) for v in pre.std.flatten()) if getattr(pre, '_enable_normalize', True) else (1., 1., 1.)
    return mean, std, bool(getattr(pre, '_channel_conversion', False))


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


class EndToEndDetector(nn.Module):
    """uint8 image -> ``(boxes, scores, labels)``: network, decoding and NMS in one graph."""

    def __init__(self, image_input: ImageInput, dense: DenseDetector, post: RetinaNetPostprocess) -> None:
        super().__init__()
        self.image_input = image_input
        self.dense = dense
        self.post = post

    def forward(self, image: torch.Tensor):
        outputs = self.dense(self.image_input(image))
        n = len(outputs) // 2
        return self.post(list(outputs[:n]), list(outputs[n:]))


class EndToEndSegmentor(nn.Module):
    """uint8 image -> ``seg_map`` uint8 ``[1, H, W]``, the argmax class after the resize."""

    def __init__(self, image_input: ImageInput, logits: SegmentorLogits) -> None:
        super().__init__()
        self.image_input = image_input
        self.logits = logits

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        return self.logits(self.image_input(image)).argmax(1).to(torch.uint8)


OUTPUT_NAMES = {'retinanet': ['boxes', 'scores', 'labels'], 'segmentor': ['seg_map']}


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


def end_to_end(target: Target, candidates: int = 1000, iterations: int = 32) -> Target:
    """The end-to-end version of a ``retinanet`` or ``segmentor`` target (same name and size):
    uint8 image in, boxes / scores / labels or seg_map out, with its metadata in ``meta``."""
    model = target.full_model
    if target.kind not in OUTPUT_NAMES:
        raise NotImplementedError(f'{target.kind} targets have no end-to-end export yet (use --raw)')
    mean, std, bgr_to_rgb = preprocessor_settings(model)
    image_input = ImageInput(mean, std, bgr_to_rgb)
    h, w = target.size
    if target.kind == 'segmentor':
        module = EndToEndSegmentor(image_input, target.module)
        score_thr = None
    else:
        with torch.no_grad():
            outs = target.module(torch.zeros(1, 3, h, w))
        sizes = [tuple(o.shape[-2:]) for o in outs[:len(outs) // 2]]
        post = RetinaNetPostprocess(model.bbox_head, (h, w), sizes, candidates, iterations)
        module = EndToEndDetector(image_input, target.module, post)
        score_thr = post.score_thr
    meta = metadata(target.kind, class_names(model, target.kind), (h, w), mean, std, score_thr,
                    config=getattr(target, 'config', None), checkpoint=getattr(target, 'checkpoint', None))
    if target.kind == 'retinanet':
        meta.update(max_detections=post.max_per_img, iou_threshold=post.iou_threshold, nms_candidates=post.candidates,
                    nms_iterations=iterations)
    out = Target(target.name, module.eval(), target.size, model, target.kind)
    out.meta = meta
    out.example = torch.zeros(1, h, w, 3, dtype=torch.uint8)
    return out


def metadata(kind: str, classes: Sequence[str], size: Tuple[int, int], mean: Sequence[float], std: Sequence[float],
             score_thr: Optional[float] = None, config: Optional[str] = None,
             checkpoint: Optional[str] = None) -> Dict[str, object]:
    """What every end-to-end artifact carries (ONNX metadata_props, Core ML user metadata,
    ``<name>.json`` beside a ``.pte``)."""
    from importlib.metadata import PackageNotFoundError, version
    try:
        package_version = version('edgeformers')
    except PackageNotFoundError:
        package_version = 'unknown'
    return dict(task='detection' if kind == 'retinanet' else 'segmentation', classes=list(classes),
                input_name='image', input_size=[int(size[0]), int(size[1])], input_layout='NHWC',
                input_dtype='uint8', color_order='RGB', mean=list(mean), std=list(std), score_threshold=score_thr,
                outputs=OUTPUT_NAMES[kind], config=config, checkpoint=checkpoint or None,
                weights='checkpoint' if checkpoint else 'random', edgeformers_version=package_version)
