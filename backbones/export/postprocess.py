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

No data-dependent shapes and no ``torchvision::nms``: NMS is the fixed point of

    keep[i] = valid[i] and not any(keep[j] and iou(j, i) > thr for j ranked before i)

This system is triangular (``keep[i]`` depends only on boxes ranked before ``i``), so it has
exactly one solution, and that solution is greedy NMS (greedy decides the boxes in the same
order by the same rule). Jacobi iteration from ``keep = valid`` settles box ``i`` after at
most ``i + 1`` steps, in practice after the length of the longest suppression chain. After
``iterations`` steps one more step is taken: on the longest prefix where the two agree the
prefix is a fixed point of its own (triangular) subsystem, hence exactly greedy NMS; boxes
past that prefix are dropped. So the output is always the start of mmdet's detection list,
and the whole of it when the chains are shorter than ``iterations`` (check:
:func:`nms_settled`) and the ``max_per_img`` kept boxes lie within the ``candidates`` best
valid pairs (all of them when fewer pass the threshold).
"""
from __future__ import annotations

from typing import List, Sequence, Tuple

import torch
import torch.nn as nn


def suppression_matrix(boxes: torch.Tensor, iou_threshold: float) -> torch.Tensor:
    """``S[j, i]``: box ``j`` (ranked before ``i``) suppresses box ``i``; boxes sorted by score.
    IoU as mmcv's CPU ``nms`` computes it (offset 0)."""
    x1, y1, x2, y2 = boxes.unbind(-1)
    areas = (x2 - x1) * (y2 - y1)
    w = (torch.minimum(x2[:, None], x2[None, :]) - torch.maximum(x1[:, None], x1[None, :])).clamp(min=0)
    h = (torch.minimum(y2[:, None], y2[None, :]) - torch.maximum(y1[:, None], y1[None, :])).clamp(min=0)
    inter = w * h
    iou = inter / (areas[:, None] + areas[None, :] - inter)
    n = boxes.shape[0]
    later = torch.ones(n, n, dtype=torch.bool).triu(1)
    return (iou > iou_threshold) & later


def _step(keep: torch.Tensor, valid: torch.Tensor, suppress: torch.Tensor) -> torch.Tensor:
    hits = torch.matmul(keep.to(suppress.dtype)[None, :], suppress)[0]
    return valid & (hits < 0.5)


def fixed_point_nms(boxes: torch.Tensor, valid: torch.Tensor, iou_threshold: float,
                    iterations: int) -> Tuple[torch.Tensor, torch.Tensor]:
    """Greedy NMS of ``boxes`` (sorted by descending score; ``valid`` marks real ones) as
    ``iterations`` Jacobi steps of the fixed-point system. Returns ``(keep, settled)``:
    ``keep & settled`` is exactly greedy NMS on the settled prefix; ``settled`` is all true
    when the iteration has converged."""
    suppress = suppression_matrix(boxes, iou_threshold).float()
    keep = valid
    for _ in range(iterations):
        keep = _step(keep, valid, suppress)
    changed = (_step(keep, valid, suppress) != keep).to(torch.int32)
    settled = torch.cumsum(changed, 0) == 0
    return keep & settled, settled


def nms_settled(settled: torch.Tensor) -> bool:
    return bool(settled.all())


class RetinaNetPostprocess(nn.Module):
    """Raw RetinaNet head outputs (one image) -> ``boxes [K, 4], scores [K], labels [K]``.

    Args:
        head: the mmdet RetinaHead (its ``test_cfg``, ``bbox_coder``, ``prior_generator``).
        size: export size (H, W): anchors are built for it, boxes clipped to it.
        featmap_sizes: (H, W) of each level's head output at that size.
        candidates: how many of the valid pairs (best first) go into NMS.
        iterations: Jacobi steps of the fixed-point NMS.
    """

    def __init__(self, head: nn.Module, size: Tuple[int, int], featmap_sizes: Sequence[Tuple[int, int]],
                 candidates: int = 1000, iterations: int = 32) -> None:
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
        self.iterations = iterations
        priors = head.prior_generator.grid_priors([tuple(s) for s in featmap_sizes], device='cpu')
        self.num_levels = len(priors)
        for i, p in enumerate(priors):
            self.register_buffer(f'priors{i}', p.float(), persistent=False)
        per_level = [p.shape[0] * self.num_classes for p in priors]
        self.level_k = [n if self.nms_pre <= 0 else min(self.nms_pre, n) for n in per_level]
        self.candidates = min(candidates, sum(self.level_k))

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
            valid = valid & (boxes[:, 2] - boxes[:, 0] > self.min_bbox_size) \
                & (boxes[:, 3] - boxes[:, 1] > self.min_bbox_size)
        return select_detections(boxes, scores, labels, valid, self.candidates, self.iterations,
                                 self.iou_threshold, self.max_per_img)


def select_detections(boxes: torch.Tensor, scores: torch.Tensor, labels: torch.Tensor, valid: torch.Tensor,
                      candidates: int, iterations: int, iou_threshold: float, max_per_img: int):
    """Class-wise greedy NMS of the ``valid`` (box, score, label) candidates as mmcv's
    ``batched_nms`` does it, then the first ``max_per_img`` kept in descending score order:
    ``boxes [K, 4], scores [K], labels [K]`` (K = ``max_per_img``), padded with zero boxes,
    score 0 and label -1. Only the ``candidates`` best valid ones go into the fixed-point NMS."""
    candidates = min(candidates, scores.shape[0])
    # mmcv's batched_nms: boxes of different classes apart by label * (max coordinate + 1)
    max_coordinate = torch.where(valid[:, None], boxes, torch.zeros_like(boxes)).max()
    offset_boxes = boxes + (labels.to(boxes.dtype) * (max_coordinate + 1))[:, None]
    # the best valid candidates, in descending score order
    rank_key = torch.where(valid, scores, torch.full_like(scores, -1.0))
    _, order = torch.topk(rank_key, candidates)
    keep, _ = fixed_point_nms(offset_boxes[order], valid[order], iou_threshold, iterations)
    # the first max_per_img kept, in score order
    k = min(max_per_img, candidates)
    out_key = torch.where(keep, scores[order], torch.full_like(scores[order], -1.0))
    _, pick = torch.topk(out_key, k)
    sel = order[pick]
    real = keep[pick]
    out_boxes = torch.where(real[:, None], boxes[sel], torch.zeros_like(boxes[sel]))
    out_scores = torch.where(real, scores[sel], torch.zeros_like(scores[sel]))
    out_labels = torch.where(real, labels[sel], torch.full_like(labels[sel], -1))
    if k < max_per_img:
        pad = max_per_img - k
        out_boxes = torch.cat([out_boxes, out_boxes.new_zeros(pad, 4)])
        out_scores = torch.cat([out_scores, out_scores.new_zeros(pad)])
        out_labels = torch.cat([out_labels, out_labels.new_full((pad,), -1)])
    return out_boxes, out_scores, out_labels
