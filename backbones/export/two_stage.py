"""Mask R-CNN post-processing inside the exported graph, as fixed-size tensor ops.

Reproduces mmdet 3.3.0's ``TwoStageDetector.predict`` for one image at the export size
(``scale_factor`` 1) after the network (backbone + FPN + RPN convolutions):

1. RPN (``RPNHead._predict_by_feat_single`` + ``_bbox_post_process``): per level, sigmoid
   objectness and the ``nms_pre`` best anchors; decoding with the RPN's ``bbox_coder``
   (clipped to the image); ``min_bbox_size``; NMS at ``rpn.nms.iou_threshold`` with the level
   as the class (mmcv's ``batched_nms`` offsets the levels apart, so proposals of different
   levels never suppress each other: the NMS runs on each level's ``nms_pre`` boxes alone,
   on the same offset coordinates mmcv uses); the ``rpn.max_per_img`` best kept, padded
   (padding rows are ignored downstream).
2. :class:`MultiLevelRoIAlign`: mmdet's ``SingleRoIExtractor`` (each RoI on ONE level by its
   scale, ``finest_scale``) with mmcv's ``roi_align`` (bilinear, ``aligned`` half-pixel
   offset, samples outside ``[-1, size]`` are zero, coordinates clamped as mmcv does, average
   of an adaptive ``ceil(roi / output)`` grid per bin when ``sampling_ratio`` is 0) as gathers
   from the concatenated channels-last levels, each feature cell a bin reads gathered once
   with its summed weight. The adaptive grid is data dependent: its size is bounded per
   level (a RoI on a level below the top has ``w * h < (2 * finest_scale / stride)**2`` cells
   there, on the top level it is bounded by the image), the graph unrolls that bound and
   masks what a RoI does not have, so the average is mmcv's (up to float rounding).
3. The box head on the proposals' RoI features, softmax scores, class-specific decoding
   (clipped), ``score_thr``, class-wise NMS, the first ``max_per_img``
   (:func:`~.postprocess.select_detections`: greedy NMS unrolled over the best ``candidates``).
4. The mask head on the kept boxes' RoI features, the label's channel, sigmoid, pasted to the
   input size as mmdet's ``_do_paste_mask`` does (``grid_sample`` bilinear, written as
   ``Wy @ mask @ Wx^T`` per box) and thresholded at ``mask_thr_binary``.

Outputs: ``boxes [K, 4]``, ``scores [K]``, ``labels [K]`` (K = ``rcnn.max_per_img``, empty rows
score 0, label -1, zero box) and ``masks`` uint8 ``[K, H, W]`` (zero for empty rows).
"""
from __future__ import annotations

import contextlib
import math
from typing import List, Sequence, Tuple

import torch
import torch.nn as nn

from .postprocess import fixed_point_nms, large_enough, register_priors, select_detections


def decode(coder: nn.Module, priors: torch.Tensor, deltas: torch.Tensor, max_shape: Tuple[int, int]) -> torch.Tensor:
    """``DeltaXYWHBBoxCoder.decode`` as mmdet runs it in ``predict`` (``delta2bbox``): called
    directly, because under ``torch.onnx.export`` the coder switches to its ONNX branch, which
    imports an mmdet 2.x module."""
    from mmdet.models.task_modules.coders.delta_xywh_bbox_coder import delta2bbox
    if type(coder).__name__ != 'DeltaXYWHBBoxCoder' or getattr(coder, 'use_box_type', False):
        raise NotImplementedError(f'in-graph decoding covers DeltaXYWHBBoxCoder, not {type(coder).__name__}')
    return delta2bbox(priors, deltas, coder.means, coder.stds, max_shape, 16 / 1000, coder.clip_border,
                      coder.add_ctr_clamp, coder.ctr_clamp)


# ---------------------------------------------------------------------------- RoIAlign
def sample_grids(output_size: Tuple[int, int], level_sizes: Sequence[Tuple[float, float]],
                 cell_area: Sequence[float]) -> List[Tuple[int, int]]:
    """Every adaptive sample grid (``ceil(h / oh)`` rows x ``ceil(w / ow)`` columns per bin) a
    RoI can have on some level. The graph unrolls the most sample rows and columns of these,
    and gathers the most feature cells one bin reads, ``(a + 1) * (b + 1)`` (see
    :class:`MultiLevelRoIAlign`).

    ``level_sizes``: the largest RoI height / width on each level (in its cells);
    ``cell_area``: the largest RoI area on each level in its cells (``inf`` for the top level).
    A grid of ``a x b`` samples needs ``h > (a - 1) * oh`` and ``w > (b - 1) * ow``, so it is
    possible only if ``(a - 1) * oh * (b - 1) * ow <= area`` (``<=``: a margin for rounding)."""
    oh, ow = output_size
    grids = set()
    for (h, w), area in zip(level_sizes, cell_area):
        for a in range(1, max(1, math.ceil(h / oh)) + 1):
            for b in range(1, max(1, math.ceil(w / ow)) + 1):
                if (a - 1) * oh * (b - 1) * ow <= area:
                    grids.add((a, b))
    return sorted(grids)


class CellStep(nn.Module):
    """One step of the per-cell RoIAlign sum: ``acc + cells * weight`` (``cells * weight`` for
    the first). A module of its own so that the exported graph names its operators
    (``nn_module_stack``): the ExecuTorch writer gives each of them its own XNNPACK call
    (:func:`~.formats.write_executorch`), so that every gathered cell is consumed, and its
    memory freed, before the next is gathered."""

    def forward(self, acc, cells: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
        step = cells * weight
        return step if acc is None else acc + step


class MultiLevelRoIAlign(nn.Module):
    """mmdet's ``SingleRoIExtractor`` + mmcv's ``roi_align`` for one image:
    ``(feats, rois [R, 4]) -> [R, C, oh, ow]``.

    Each bin's average of bilinear samples is a weighted sum of the feature cells its samples
    touch, and the weights are separable: a cell's weight is its row's weight (summed over
    the samples' rows) times its column's. So every bin gathers each cell it reads once, with
    that product as its weight: with the adaptive grid (``sampling_ratio`` 0) a bin of ``a x b``
    samples reads at most ``(a + 1) x (b + 1)`` cells (36 instead of 4 x 25 neighbours for a
    5 x 5 grid). The sum is mmcv's up to float rounding. Where a bin spans a whole number of
    cells, rounding can put its last sample exactly on the last of the ``a + 1`` rows of its
    window; the sample's second row, past the window, then has the sample's fractional part as
    its weight, 0 (at most a few ulps of the coordinate), and is left out. With a fixed
    ``sampling_ratio`` s the samples of a bin may lie far apart, so each axis keeps its 2 s
    bilinear neighbours (4 s^2 cells per bin, as sample by sample).

    Args:
        extractor: the mmdet ``SingleRoIExtractor`` (its RoIAlign layers, strides, finest scale).
        size: export size (H, W): bounds the RoIs (boxes are clipped to the image).
        featmap_sizes: (H, W) of the FPN levels the extractor reads.
    """

    #: cells gathered per bin in one gather + batched matmul (memory: ``R x oh x ow x CHUNK x C``
    #: floats at a time)
    CHUNK = 4

    #: gather one cell of every bin at a time and weight it by a multiply-add instead (see
    #: :func:`gathers_per_cell`): the same sum in another order (rounding apart)
    per_cell = False

    def __init__(self, extractor: nn.Module, size: Tuple[int, int], featmap_sizes: Sequence[Tuple[int, int]]) -> None:
        super().__init__()
        self.cell_step = CellStep()
        layer = extractor.roi_layers[0]
        if type(layer).__name__ != 'RoIAlign' or getattr(layer, 'pool_mode', 'avg') != 'avg':
            raise NotImplementedError(f'in-graph RoI extraction covers average RoIAlign, not {layer}')
        if getattr(extractor, 'gc_context', False) or getattr(extractor, 'aggregation', None) not in (None,):
            raise NotImplementedError('in-graph RoI extraction covers SingleRoIExtractor')
        out = layer.output_size
        self.output_size = (int(out[0]), int(out[1])) if isinstance(out, (tuple, list)) else (int(out), int(out))
        self.sampling_ratio = int(layer.sampling_ratio)
        self.aligned = bool(layer.aligned)
        self.strides = [int(s) for s in extractor.featmap_strides]
        self.finest_scale = float(extractor.finest_scale)
        self.num_levels = len(self.strides)
        sizes = [tuple(int(v) for v in s) for s in featmap_sizes[:self.num_levels]]
        for layer_i, stride in zip(extractor.roi_layers, self.strides):
            assert abs(layer_i.spatial_scale - 1.0 / stride) < 1e-12
        self.featmap_sizes = sizes
        offsets = [0]
        for h, w in sizes[:-1]:
            offsets.append(offsets[-1] + h * w)
        self.register_buffer('scale', torch.tensor([1.0 / s for s in self.strides], dtype=torch.float32),
                             persistent=False)
        self.register_buffer('height', torch.tensor([float(h) for h, _ in sizes]), persistent=False)
        self.register_buffer('width', torch.tensor([float(w) for _, w in sizes]), persistent=False)
        self.register_buffer('width_int', torch.tensor([w for _, w in sizes], dtype=torch.long), persistent=False)
        self.register_buffer('offset', torch.tensor(offsets, dtype=torch.long), persistent=False)
        # level thresholds: floor(log2(scale / finest + 1e-6)) >= k  <=>  scale / finest + 1e-6 >= 2 ** k
        self.register_buffer('level_bounds', torch.tensor([2.0 ** k for k in range(1, self.num_levels)]),
                             persistent=False)
        #: most samples per bin, sample rows / columns per bin, feature cells gathered per bin
        if self.sampling_ratio > 0:
            s = self.sampling_ratio
            self.grid_max = (s, s)
            self.samples = s * s
            self.points = 4 * s * s
        else:
            img_h, img_w = size
            extent = [(img_h / s + 1, img_w / s + 1) for s in self.strides]
            area = [(2 * self.finest_scale * 2 ** k / s) ** 2 for k, s in enumerate(self.strides)]
            area[-1] = float('inf')
            grids = sample_grids(self.output_size, extent, area)
            self.grid_max = (max(a for a, _ in grids), max(b for _, b in grids))
            self.samples = max(a * b for a, b in grids)
            self.points = max((a + 1) * (b + 1) for a, b in grids)

    def levels(self, rois: torch.Tensor) -> torch.Tensor:
        """mmdet's ``map_roi_levels``: ``floor(log2(sqrt(w * h) / finest_scale + 1e-6))``
        clamped to the levels, as comparisons (no log in the graph)."""
        scale = torch.sqrt((rois[:, 2] - rois[:, 0]) * (rois[:, 3] - rois[:, 1]))
        x = scale / self.finest_scale + 1e-6
        return (x[:, None] >= self.level_bounds[None, :]).sum(1)

    def _axis_cells(self, start: torch.Tensor, bin_size: torch.Tensor, grid: torch.Tensor, cells: torch.Tensor,
                    bins: int, grid_max: int):
        """One axis of every bin: the cells its samples touch and their summed bilinear weights
        (``[R, bins, K]`` each), and how many of the K a RoI uses (``[R]``)."""
        pos = torch.arange(bins, dtype=start.dtype, device=start.device)
        i = torch.arange(grid_max, dtype=start.dtype, device=start.device)
        g = grid.clamp(min=1.0)
        base = start[:, None] + pos[None, :] * bin_size[:, None]                     # [R, bins]
        # sample i of a bin sits at base + (i + 0.5) * bin / grid, as mmcv computes it
        coord = base[:, :, None] + ((i[None, :] + 0.5) * bin_size[:, None] / g[:, None])[:, None, :]
        w_low, w_high, low, high = _axis(coord, cells[:, None, None])
        used = (i[None, :] < grid[:, None]).to(coord.dtype)[:, None, :]
        w_low, w_high = w_low * used, w_high * used
        if self.sampling_ratio > 0:
            return torch.cat([low, high], -1), torch.cat([w_low, w_high], -1), torch.full_like(grid, 2.0 * grid_max)
        first = low[:, :, :1]
        k = torch.arange(grid_max + 1, device=start.device)
        weight = ((low - first)[..., None] == k).to(coord.dtype) * w_low[..., None] \
            + ((high - first)[..., None] == k).to(coord.dtype) * w_high[..., None]
        last = (cells.to(torch.long) - 1)[:, None, None]
        return torch.minimum(first + k, last), weight.sum(2), (grid + 1.0).clamp(min=1.0)

    def forward(self, feats: Sequence[torch.Tensor], rois: torch.Tensor) -> torch.Tensor:
        oh, ow = self.output_size
        flat, idx, w, count = self.bin_cells(feats, rois)
        acc = self._sum_per_cell(flat, idx, w) if self.per_cell else self._sum_in_chunks(flat, idx, w)
        out = acc.reshape(rois.shape[0], oh * ow, flat.shape[1]) / count[:, None, None]
        return out.reshape(rois.shape[0], oh, ow, flat.shape[1]).permute(0, 3, 1, 2)

    def _sum_in_chunks(self, flat: torch.Tensor, idx: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
        """Gathers ``CHUNK`` cells of every bin at a time, weighted by a batched matmul:
        ``[R * oh * ow, 1, C]``."""
        acc, w = None, w[:, None, :]
        for c in range(0, self.points, self.CHUNK):
            k = min(self.CHUNK, self.points - c)
            cells = torch.index_select(flat, 0, idx[:, c:c + k].reshape(-1)).reshape(idx.shape[0], k, flat.shape[1])
            val = torch.bmm(w[:, :, c:c + k], cells)
            acc = val if acc is None else acc + val
        return acc

    def _sum_per_cell(self, flat: torch.Tensor, idx: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
        """Gathers one cell of every bin at a time, weighted by a multiply-add: ``[R * oh * ow, C]``."""
        acc = None
        for c in range(self.points):
            acc = self.cell_step(acc, torch.index_select(flat, 0, idx[:, c]), w[:, c:c + 1])
        return acc

    def bin_cells(self, feats: Sequence[torch.Tensor], rois: torch.Tensor):
        """The feature cells every bin reads and their weights: ``flat [cells, C]`` (the levels
        concatenated, channels last), ``idx`` and ``w`` ``[R * oh * ow, points]`` (rows of
        ``flat``, weights; unused slots weigh 0), and each RoI's sample count ``[R]`` (the
        average's divisor)."""
        oh, ow = self.output_size
        channels = feats[0].shape[1]
        flat = torch.cat([f[0].permute(1, 2, 0).reshape(-1, channels) for f in feats[:self.num_levels]])
        n = rois.shape[0]
        lvl = self.levels(rois)
        scale, height, width = self.scale[lvl], self.height[lvl], self.width[lvl]
        off = 0.5 if self.aligned else 0.0
        start_w = rois[:, 0] * scale - off
        start_h = rois[:, 1] * scale - off
        roi_w = (rois[:, 2] * scale - off) - start_w
        roi_h = (rois[:, 3] * scale - off) - start_h
        if not self.aligned:
            roi_w = roi_w.clamp(min=1.0)
            roi_h = roi_h.clamp(min=1.0)
        bin_w = roi_w / ow
        bin_h = roi_h / oh
        if self.sampling_ratio > 0:
            grid_w = torch.full_like(roi_w, float(self.sampling_ratio))
            grid_h = torch.full_like(roi_h, float(self.sampling_ratio))
        else:
            grid_w = torch.ceil(roi_w / ow)
            grid_h = torch.ceil(roi_h / oh)
        count = (grid_h * grid_w).clamp(min=1.0)
        rows, wy, ny = self._axis_cells(start_h, bin_h, grid_h, height, oh, self.grid_max[0])
        cols, wx, nx = self._axis_cells(start_w, bin_w, grid_w, width, ow, self.grid_max[1])
        # cell p of a bin: row p // nx, column p % nx of the RoI's (ny x nx) window
        p = torch.arange(self.points, dtype=rois.dtype, device=rois.device)[None, :]
        ky = torch.floor(p / nx[:, None])
        kx = p - ky * nx[:, None]
        used = (p < (ny * nx)[:, None]).to(flat.dtype)                               # [R, P]
        ky = ky.clamp(max=rows.shape[-1] - 1).long()[:, None, :]
        kx = kx.clamp(max=cols.shape[-1] - 1).long()[:, None, :]
        row_idx = torch.gather(rows, 2, ky.expand(n, oh, self.points))              # [R, oh, P]
        row_w = torch.gather(wy, 2, ky.expand(n, oh, self.points)) * used[:, None, :]
        col_idx = torch.gather(cols, 2, kx.expand(n, ow, self.points))              # [R, ow, P]
        col_w = torch.gather(wx, 2, kx.expand(n, ow, self.points))
        row_start = self.offset[lvl][:, None, None] + row_idx * self.width_int[lvl][:, None, None]
        idx = (row_start[:, :, None, :] + col_idx[:, None, :, :]).reshape(n * oh * ow, self.points)
        w = (row_w[:, :, None, :] * col_w[:, None, :, :]).reshape(n * oh * ow, self.points)
        return flat, idx, w, count


@contextlib.contextmanager
def gathers_per_cell(module: nn.Module):
    """While exporting to ExecuTorch: every :class:`MultiLevelRoIAlign` in ``module`` gathers
    one cell of all bins at a time and weights it by a multiply-add. ExecuTorch runs the
    gathers on its portable (single-thread) kernels outside XNNPACK, and a chunk of gathered
    cells is copied once more (``_clone_dim_order``) before each batched matmul; one cell at a
    time needs no such copy, and XNNPACK runs the multiply-adds. ONNX Runtime runs the batched
    matmuls faster, so only the ExecuTorch writer uses this form (docs/benchmarks.md has the
    measurements). The writer also runs each step (:class:`CellStep`) as XNNPACK calls of its own, in depth-first order, so
    that the memory plan holds a few gathered cells instead of all of them."""
    aligns = [m for m in module.modules() if isinstance(m, MultiLevelRoIAlign)]
    saved = [m.per_cell for m in aligns]
    for m in aligns:
        m.per_cell = True
    try:
        yield module
    finally:
        for m, value in zip(aligns, saved):
            m.per_cell = value


def _axis(coord: torch.Tensor, size: torch.Tensor):
    """mmcv's ``bilinear_interpolate`` along one axis: (weight of the low cell, of the high
    cell, low index, high index); weights are zero for a sample outside ``[-1, size]``."""
    inside = ((coord >= -1.0) & (coord <= size)).to(coord.dtype)
    c = coord.clamp(min=0.0)
    low = torch.floor(c)
    top = low >= size - 1
    low = torch.where(top, size - 1, low)
    c = torch.where(top, low, c)
    high = torch.where(top, low, low + 1)
    frac = c - low
    return (1.0 - frac) * inside, frac * inside, low.long(), high.long()


# ---------------------------------------------------------------------------- RPN
class RPNProposals(nn.Module):
    """Raw RPN outputs (one image) -> ``(proposals [P, 4], valid [P])``, mmdet's proposals
    first (descending objectness), padding rows after them (``valid`` false)."""

    def __init__(self, head: nn.Module, cfg, size: Tuple[int, int], featmap_sizes: Sequence[Tuple[int, int]],
                 iterations: int = 32) -> None:
        super().__init__()
        if not head.use_sigmoid_cls or head.cls_out_channels != 1:
            raise NotImplementedError('in-graph proposals cover a sigmoid RPN head')
        nms = dict(cfg.nms)
        if nms.get('type', 'nms') != 'nms':
            raise NotImplementedError(f'in-graph proposal NMS reproduces hard NMS, not {nms}')
        self.coder = head.bbox_coder
        self.size = tuple(size)
        self.nms_pre = int(cfg.get('nms_pre', -1))
        self.min_bbox_size = cfg.get('min_bbox_size', -1)
        self.iou_threshold = float(nms['iou_threshold'])
        self.iterations = iterations
        anchors = register_priors(self, head.prior_generator, featmap_sizes)
        self.num_levels = len(anchors)
        self.level_k = [n if self.nms_pre <= 0 else min(self.nms_pre, n) for n in anchors]
        self.count = min(int(cfg.max_per_img), sum(self.level_k))

    def forward(self, cls_scores: List[torch.Tensor], bbox_preds: List[torch.Tensor]):
        scores, deltas, priors = [], [], []
        for i in range(self.num_levels):
            s = cls_scores[i][0].permute(1, 2, 0).reshape(-1).sigmoid()
            d = bbox_preds[i][0].permute(1, 2, 0).reshape(-1, 4)
            top, idx = torch.topk(s, self.level_k[i])
            scores.append(top)
            deltas.append(d[idx])
            priors.append(getattr(self, f'priors{i}')[idx])
        boxes = decode(self.coder, torch.cat(priors), torch.cat(deltas), self.size)
        score = torch.cat(scores)
        valid = torch.ones_like(score, dtype=torch.bool)
        if self.min_bbox_size >= 0:
            valid = large_enough(boxes, self.min_bbox_size)
        # mmcv's batched_nms with the level as the class: the same offset coordinates, but as
        # levels never overlap after the offset, each level's NMS runs on its boxes alone; the
        # levels, padded to the longest (padding invalid), iterate together
        max_coordinate = torch.where(valid[:, None], boxes, torch.zeros_like(boxes)).max()
        longest = max(self.level_k)
        level_boxes, level_valid, start = [], [], 0
        for i, k in enumerate(self.level_k):
            level_boxes.append(boxes[start:start + k] + float(i) * (max_coordinate + 1))
            level_valid.append(valid[start:start + k])
            if k < longest:
                level_boxes[-1] = torch.cat([level_boxes[-1], boxes.new_zeros(longest - k, 4)])
                level_valid[-1] = torch.cat([level_valid[-1], valid.new_zeros(longest - k)])
            start += k
        kept, _ = fixed_point_nms(torch.stack(level_boxes), torch.stack(level_valid), self.iou_threshold,
                                  self.iterations)
        keep = torch.cat([kept[i, :k] for i, k in enumerate(self.level_k)])
        key = torch.where(keep, score, torch.full_like(score, -1.0))
        _, pick = torch.topk(key, self.count)
        return boxes[pick], keep[pick]


# ---------------------------------------------------------------------------- masks
def paste_masks(masks: torch.Tensor, boxes: torch.Tensor, size: Tuple[int, int]) -> torch.Tensor:
    """mmdet's ``_do_paste_mask`` (``grid_sample``, bilinear, ``align_corners=False``, zero
    padding; with ``skip_empty`` each box's region ``[floor(x0) - 1, ceil(x1) + 1)``) for
    ``masks [K, M, M]`` (probabilities) and ``boxes [K, 4]``: ``[K, H, W]`` floats, computed as
    ``Wy @ mask @ Wx^T`` (the bilinear weights of an axis-aligned grid are separable)."""
    h, w = size
    x0, y0, x1, y1 = boxes.unbind(-1)
    wy = _paste_weights(y0, y1, h, masks.shape[1])
    wx = _paste_weights(x0, x1, w, masks.shape[2])
    return torch.matmul(torch.matmul(wy, masks), wx.transpose(1, 2))


def _paste_weights(lo: torch.Tensor, hi: torch.Tensor, length: int, cells: int) -> torch.Tensor:
    """``[K, length, cells]``: the bilinear weight of each mask cell for each image pixel."""
    pixel = torch.arange(length, dtype=torch.float32, device=lo.device) + 0.5
    g = (pixel[None, :] - lo[:, None]) / (hi - lo)[:, None] * 2 - 1
    g = torch.where(torch.isinf(g), torch.zeros_like(g), g)
    c = ((g + 1) * cells - 1) / 2                 # grid_sample's unnormalisation (align_corners=False)
    low = torch.floor(c)
    frac = c - low
    cell = torch.arange(cells, dtype=torch.float32, device=lo.device)
    weights = (cell[None, None, :] == low[:, :, None]).to(c.dtype) * (1 - frac)[:, :, None] \
        + (cell[None, None, :] == (low + 1)[:, :, None]).to(c.dtype) * frac[:, :, None]
    # skip_empty: mmdet pastes each box into [floor(lo) - 1, ceil(hi) + 1) only
    first = (torch.floor(lo) - 1).clamp(min=0)
    last = torch.ceil(hi) + 1
    region = (pixel[None, :] - 0.5 >= first[:, None]) & (pixel[None, :] - 0.5 < last[:, None])
    return weights * region.to(weights.dtype)[:, :, None]


# ---------------------------------------------------------------------------- the whole
class MaskRCNNPostprocess(nn.Module):
    """``(fpn features, rpn scores, rpn deltas)`` of one image -> ``boxes, scores, labels, masks``.

    Args:
        detector: the mmdet Mask R-CNN (its RPN head, RoI head and ``test_cfg``).
        size: export size (H, W).
        featmap_sizes: (H, W) of each FPN level at that size.
        candidates: how many of the valid (proposal, class) pairs (best first) go into the
            class-wise greedy NMS (exact while the ``max_per_img`` kept lie among them).
        iterations: Jacobi steps of the proposals' fixed-point NMS.
    """

    def __init__(self, detector: nn.Module, size: Tuple[int, int], featmap_sizes: Sequence[Tuple[int, int]],
                 candidates: int = 4000, iterations: int = 32) -> None:
        super().__init__()
        roi_head = detector.roi_head
        if not getattr(roi_head, 'with_mask', False) or type(roi_head).__name__ != 'StandardRoIHead':
            raise NotImplementedError(f'in-graph two-stage post-processing covers Mask R-CNN\'s StandardRoIHead, '
                                      f'not {type(roi_head).__name__}')
        cfg = detector.test_cfg
        self.size = tuple(size)
        self.rpn = RPNProposals(detector.rpn_head, cfg.rpn, size, featmap_sizes, iterations)
        self.bbox_roi = MultiLevelRoIAlign(roi_head.bbox_roi_extractor, size, featmap_sizes)
        self.mask_roi = MultiLevelRoIAlign(roi_head.mask_roi_extractor, size, featmap_sizes)
        self.bbox_head = roi_head.bbox_head
        self.mask_head = roi_head.mask_head
        if self.bbox_head.reg_class_agnostic or getattr(self.bbox_head, 'custom_cls_channels', False):
            raise NotImplementedError('in-graph box head covers class-specific regression with softmax scores')
        if self.mask_head.class_agnostic:
            raise NotImplementedError('in-graph mask head covers class-specific masks')
        rcnn = cfg.rcnn
        nms = dict(rcnn.nms)
        if nms.get('type', 'nms') != 'nms' or nms.get('class_agnostic', False):
            raise NotImplementedError(f'in-graph NMS reproduces class-wise hard NMS, not {nms}')
        self.num_classes = int(self.bbox_head.num_classes)
        self.score_thr = float(rcnn.score_thr)
        self.iou_threshold = float(nms['iou_threshold'])
        self.max_per_img = int(rcnn.max_per_img)
        self.mask_threshold = float(rcnn.mask_thr_binary)
        self.candidates = min(candidates, self.rpn.count * self.num_classes)

    def forward(self, feats: List[torch.Tensor], cls_scores: List[torch.Tensor], bbox_preds: List[torch.Tensor]):
        proposals, proposal_valid = self.rpn(cls_scores, bbox_preds)
        n, c = proposals.shape[0], self.num_classes
        cls_score, bbox_pred = self.bbox_head(self.bbox_roi(feats, proposals))
        scores = torch.softmax(cls_score, dim=-1)[:, :c]
        rois = proposals[:, None, :].expand(n, c, 4).reshape(-1, 4)
        boxes = decode(self.bbox_head.bbox_coder, rois, bbox_pred.reshape(-1, 4), self.size)
        labels = torch.arange(c, device=scores.device)[None, :].expand(n, c).reshape(-1)
        scores = scores.reshape(-1)
        valid = (scores > self.score_thr) & proposal_valid[:, None].expand(n, c).reshape(-1)
        boxes, scores, labels = select_detections(boxes, scores, labels, valid, self.iou_threshold, self.max_per_img,
                                                  self.candidates)
        real = labels >= 0
        mask_pred = self.mask_head(self.mask_roi(feats, boxes))            # [K, classes, M, M]
        k = mask_pred.shape[0]
        channel = labels.clamp(min=0)
        onehot = (torch.arange(mask_pred.shape[1], device=labels.device)[None, :] == channel[:, None])
        mask_pred = (mask_pred * onehot.to(mask_pred.dtype)[:, :, None, None]).sum(1).sigmoid()
        pasted = paste_masks(mask_pred, boxes, self.size)
        if self.mask_threshold >= 0:
            masks = (pasted >= self.mask_threshold) & real[:, None, None]
            masks = masks.to(torch.uint8)
        else:
            masks = (pasted * 255).to(torch.uint8) * real[:, None, None].to(torch.uint8)
        assert masks.shape[0] == k
        return boxes, scores, labels, masks


def featmap_sizes(dense: nn.Module, size: Tuple[int, int]) -> List[Tuple[int, int]]:
    """(H, W) of each FPN level a two-stage ``DenseDetector`` gives at ``size``."""
    h, w = size
    with torch.no_grad():
        outs = dense(torch.zeros(1, 3, h, w))
    levels = len(outs) // 3
    return [tuple(o.shape[-2:]) for o in outs[:levels]]


class RoIHeads(nn.Module):
    """The box head on the proposals' and the mask head on the detections' RoI features, as
    the end-to-end Mask R-CNN runs them (the part of its post-processing XNNPACK delegates)."""

    def __init__(self, post: nn.Module) -> None:
        super().__init__()
        self.bbox_head = post.bbox_head
        self.mask_head = post.mask_head
        self.shapes = ((post.rpn.count, post.bbox_head.in_channels, *post.bbox_roi.output_size),
                       (post.max_per_img, post.mask_head.in_channels, *post.mask_roi.output_size))

    def example(self) -> torch.Tensor:
        n = sum(int(torch.Size(s).numel()) for s in self.shapes)
        return torch.rand(n, generator=torch.Generator().manual_seed(0))

    def forward(self, x: torch.Tensor):
        n = int(torch.Size(self.shapes[0]).numel())
        cls_score, bbox_pred = self.bbox_head(x[:n].reshape(self.shapes[0]))
        return cls_score, bbox_pred, self.mask_head(x[n:].reshape(self.shapes[1]))
