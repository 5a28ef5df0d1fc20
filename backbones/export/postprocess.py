"""RetinaNet post-processing inside the exported graph, as fixed-size tensor ops.

Reproduces mmdet 3.3.0's ``BaseDenseHead.predict_by_feat`` for one image at the export size
(``_predict_by_feat_single`` then ``_bbox_post_process``):

1. per level: sigmoid class scores, one candidate per (anchor, class) pair; the ``nms_pre``
   best of the pairs whose score is above ``score_thr`` (``filter_scores_and_topk``);
2. decode with the head's own ``bbox_coder`` (DeltaXYWHBBoxCoder: means, stds, clipping to
   the image) against constant anchors;
3. ``min_bbox_size``: keep boxes with width and height above it;
4. class-wise greedy NMS as mmcv's ``batched_nms`` does it: every box offset by
   ``label * (max coordinate + 1)``, IoU (``> iou_threshold`` suppresses) on the offset boxes,
   candidates in descending score order;
5. the first ``max_per_img`` kept boxes, padded to that count with score 0 and label -1.

No data-dependent shapes and no ``torchvision::nms``. :func:`greedy_nms` is greedy NMS
itself, unrolled: step ``t`` keeps the best remaining candidate and removes it and every
candidate it suppresses. Greedy NMS keeps boxes in descending score order, so ``max_per_img``
steps give exactly its first ``max_per_img`` boxes, over all candidates (every level's
``nms_pre`` best), which is all mmdet keeps. Each step is a handful of element-wise ops over
the candidates: at 640x640 (5 levels, up to 5000 candidates) 100 steps cost a few ms.

:func:`fixed_point_nms` solves the same problem as a fixed point of a triangular system
(Jacobi steps on the pairwise suppression matrix). It suits keeping many boxes (a two-stage
detector's proposals), where one step per kept box would make a huge graph:

    keep[i] = valid[i] and not any(keep[j] and iou(j, i) > thr for j ranked before i)

The system is triangular (``keep[i]`` depends only on boxes ranked before ``i``), so it has
exactly one solution, and that solution is greedy NMS. Jacobi iteration from ``keep = valid``
settles box ``i`` after at most ``i + 1`` steps, in practice after the length of the longest
suppression chain. After ``iterations`` steps one more step is taken: on the longest prefix
where the two agree the prefix is a fixed point of its own subsystem, hence exactly greedy
NMS; boxes past that prefix are dropped (check: :func:`nms_settled`).
"""
from __future__ import annotations

from typing import List, Optional, Sequence, Tuple

import torch
import torch.nn as nn


def box_iou(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """IoU ``[..., M, N]`` of boxes ``a [..., M, 4]`` and ``b [..., N, 4]`` as mmcv's CPU ``nms``
    computes it (offset 0)."""
    ax1, ay1, ax2, ay2 = a.unsqueeze(-2).unbind(-1)
    bx1, by1, bx2, by2 = b.unsqueeze(-3).unbind(-1)
    w = (torch.minimum(ax2, bx2) - torch.maximum(ax1, bx1)).clamp(min=0)
    h = (torch.minimum(ay2, by2) - torch.maximum(ay1, by1)).clamp(min=0)
    inter = w * h
    return inter / ((ax2 - ax1) * (ay2 - ay1) + (bx2 - bx1) * (by2 - by1) - inter)


def suppression_matrix(boxes: torch.Tensor, iou_threshold: float) -> torch.Tensor:
    """``S[..., j, i]``: box ``j`` (ranked before ``i``) suppresses box ``i``; boxes
    ``[..., n, 4]`` sorted by score."""
    n = boxes.shape[-2]
    later = torch.ones(n, n, dtype=torch.bool).triu(1)
    return (box_iou(boxes, boxes) > iou_threshold) & later


def _step(keep: torch.Tensor, valid: torch.Tensor, suppress: torch.Tensor) -> torch.Tensor:
    hits = torch.matmul(keep.to(suppress.dtype).unsqueeze(-2), suppress).squeeze(-2)
    return valid & (hits < 0.5)


def fixed_point_nms(boxes: torch.Tensor, valid: torch.Tensor, iou_threshold: float,
                    iterations: int) -> Tuple[torch.Tensor, torch.Tensor]:
    """Greedy NMS of ``boxes [..., n, 4]`` (sorted by descending score; ``valid [..., n]``
    marks real ones; leading dimensions are independent problems, solved in the same steps)
    as ``iterations`` Jacobi steps of the fixed-point system. Returns ``(keep, settled)``:
    ``keep & settled`` is exactly greedy NMS on the settled prefix; ``settled`` is all true
    when the iteration has converged."""
    suppress = suppression_matrix(boxes, iou_threshold).float()
    keep = valid
    for _ in range(iterations):
        keep = _step(keep, valid, suppress)
    changed = (_step(keep, valid, suppress) != keep).to(torch.int32)
    settled = torch.cumsum(changed, -1) == 0
    return keep & settled, settled


def nms_settled(settled: torch.Tensor) -> bool:
    return bool(settled.all())


def greedy_nms(boxes: torch.Tensor, scores: torch.Tensor, valid: torch.Tensor, iou_threshold: float,
               steps: int) -> Tuple[torch.Tensor, torch.Tensor]:
    """Greedy NMS unrolled over ``steps`` picks: ``(index [steps], kept [steps])``, the
    indices of the first ``steps`` boxes greedy NMS keeps, in its order (descending score);
    ``kept`` is false past the last one. IoU and the ``>`` test as mmcv's CPU ``nms``
    (offset 0); boxes need not be sorted; ``scores`` are probabilities (>= 0)."""
    position = torch.arange(boxes.shape[0], device=boxes.device)
    lowest = torch.full_like(scores, -1.0)
    # box_iou's arithmetic with what does not change between steps (corners, areas) hoisted
    # out of the loop: the same float operations in the same order, a third of the graph
    low, high = boxes[:, :2], boxes[:, 2:]
    side = high - low
    area = side[:, 0] * side[:, 1]
    remaining = valid
    picks, kept = [], []
    for _ in range(steps):
        key = torch.where(remaining, scores, lowest)
        i = key.argmax().reshape(1)  # the first of equal scores
        kept.append(key.index_select(0, i) > -0.5)  # scores are probabilities (no bool gather: Core ML)
        box = boxes.index_select(0, i)
        overlap = (torch.minimum(box[:, 2:], high) - torch.maximum(box[:, :2], low)).clamp(min=0)
        inter = overlap[:, 0] * overlap[:, 1]
        iou = inter / (area.index_select(0, i) + area - inter)
        remaining = remaining & ~(iou > iou_threshold) & (position != i)
        picks.append(i)
    return torch.cat(picks), torch.cat(kept)


def register_priors(module: nn.Module, prior_generator, featmap_sizes: Sequence[Tuple[int, int]]) -> List[int]:
    """The anchors of each level at the export size, as constant buffers ``priors{i}`` of
    ``module``; returns the number of anchors per level."""
    priors = prior_generator.grid_priors([tuple(s) for s in featmap_sizes], device='cpu')
    for i, p in enumerate(priors):
        module.register_buffer(f'priors{i}', p.float(), persistent=False)
    return [p.shape[0] for p in priors]


def large_enough(boxes: torch.Tensor, min_bbox_size: float) -> torch.Tensor:
    """mmdet's ``min_bbox_size`` filter: width and height above it."""
    return (boxes[:, 2] - boxes[:, 0] > min_bbox_size) & (boxes[:, 3] - boxes[:, 1] > min_bbox_size)


class RetinaNetPostprocess(nn.Module):
    """Raw RetinaNet head outputs (one image) -> ``boxes [K, 4], scores [K], labels [K]``.

    Args:
        head: the mmdet RetinaHead (its ``test_cfg``, ``bbox_coder``, ``prior_generator``).
        size: export size (H, W): anchors are built for it, boxes clipped to it.
        featmap_sizes: (H, W) of each level's head output at that size.
    """

    def __init__(self, head: nn.Module, size: Tuple[int, int], featmap_sizes: Sequence[Tuple[int, int]]) -> None:
        super().__init__()
        cfg = head.test_cfg
        if not head.use_sigmoid_cls:
            raise NotImplementedError('in-graph post-processing covers sigmoid-scored heads (RetinaNet)')
        self.coder = head.bbox_coder
        self.num_classes = head.cls_out_channels
        self.size = tuple(size)
        self.nms_pre = cfg.get('nms_pre', -1)
        self.score_thr = float(cfg.get('score_thr', 0))
        self.min_bbox_size = cfg.get('min_bbox_size', -1)
        nms = dict(cfg.nms)
        if nms.get('type', 'nms') != 'nms' or nms.get('class_agnostic', False):
            raise NotImplementedError(f'in-graph NMS reproduces class-wise hard NMS, not {nms}')
        self.iou_threshold = float(nms['iou_threshold'])
        self.max_per_img = int(cfg.max_per_img)
        anchors = register_priors(self, head.prior_generator, featmap_sizes)
        self.num_levels = len(anchors)
        per_level = [n * self.num_classes for n in anchors]
        self.level_k = [n if self.nms_pre <= 0 else min(self.nms_pre, n) for n in per_level]
        self.candidates = sum(self.level_k)  # every level's nms_pre best pairs go into NMS

    def forward(self, cls_scores: List[torch.Tensor], bbox_preds: List[torch.Tensor]):
        c = self.num_classes
        scores, labels, deltas, priors = [], [], [], []
        for i in range(self.num_levels):
            s = cls_scores[i][0].permute(1, 2, 0).reshape(-1).sigmoid()
            d = bbox_preds[i][0].permute(1, 2, 0).reshape(-1, 4)
            top, idx = torch.topk(s, self.level_k[i])
            anchor = torch.div(idx, c, rounding_mode='floor')
            scores.append(top)
            labels.append(idx - anchor * c)
            deltas.append(d[anchor])
            priors.append(getattr(self, f'priors{i}')[anchor])
        scores = torch.cat(scores)
        labels = torch.cat(labels)
        boxes = self.coder.decode(torch.cat(priors), torch.cat(deltas), max_shape=self.size)
        valid = scores > self.score_thr
        if self.min_bbox_size >= 0:
            valid = valid & large_enough(boxes, self.min_bbox_size)
        return select_detections(boxes, scores, labels, valid, self.iou_threshold, self.max_per_img)


def select_detections(boxes: torch.Tensor, scores: torch.Tensor, labels: torch.Tensor, valid: torch.Tensor,
                      iou_threshold: float, max_per_img: int, candidates: Optional[int] = None):
    """Class-wise greedy NMS of the ``valid`` (box, score, label) candidates as mmcv's
    ``batched_nms`` does it, then the first ``max_per_img`` kept in descending score order:
    ``boxes [K, 4], scores [K], labels [K]`` (K = ``max_per_img``), padded with zero boxes,
    score 0 and label -1. ``candidates``: only that many best valid ones go into NMS (for very
    many candidates; exact while the ``max_per_img`` kept lie among them); None: all."""
    if candidates is not None and candidates < scores.shape[0]:
        _, best = torch.topk(torch.where(valid, scores, torch.full_like(scores, -1.0)), candidates)
        boxes, scores, labels, valid = boxes[best], scores[best], labels[best], valid[best]
    # mmcv's batched_nms: boxes of different classes apart by label * (max coordinate + 1)
    max_coordinate = torch.where(valid[:, None], boxes, torch.zeros_like(boxes)).max()
    offset_boxes = boxes + (labels.to(boxes.dtype) * (max_coordinate + 1))[:, None]
    sel, real = greedy_nms(offset_boxes, scores, valid, iou_threshold, max_per_img)
    out_boxes = torch.where(real[:, None], boxes[sel], torch.zeros_like(boxes[sel]))
    out_scores = torch.where(real, scores[sel], torch.zeros_like(scores[sel]))
    out_labels = torch.where(real, labels[sel], torch.full_like(labels[sel], -1))
    return out_boxes, out_scores, out_labels
