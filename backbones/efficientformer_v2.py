"""EfficientFormerV2 (Li et al., ICCV 2023) as a multi-scale backbone.

Architecture as snap-research/EfficientFormer (``models/efficientformer_v2.py`` for
classification, ``detection/backbonev2.py`` for dense prediction); parameter names follow
timm's ``efficientformerv2_*`` so timm's ImageNet weights load unchanged.

Attention biases. Every attention keeps a table of learned biases indexed by the relative
offset ``(|dy|, |dx|)`` between query and key cells, sized for a base grid
``ceil(resolution / stride)``. At another input size the table has to be adapted:

* ``bias_mode='official'`` (the official dense backbone): gather the table to the base
  ``N x N`` matrix, then resize that matrix bicubically to the real ``(N_q, N_k)``. This
  reproduces the official detection/segmentation models and checkpoints exactly, but it
  interpolates across flattened token indices, so it only has spatial meaning at the base
  size; the official recipe therefore starts the dense tables from zero.
* ``bias_mode='table'``: resize the ``(|dy|, |dx|)`` table itself bicubically to the real
  grid, then gather. A bias keeps its meaning (an offset in image-relative units), so the
  tables learned at 224 on ImageNet carry over to dense training; a checkpoint whose tables
  were made for another base grid is resized on loading.

At the base size both modes equal the classification model. In eval mode the gathered (and
resized) bias of each input size is computed once and cached; training and tracing
(``torch.jit.trace``, ``torch.export``) compute it in the graph.
"""
from __future__ import annotations

import math
from typing import Any, Dict, Optional, Sequence, Tuple, Union

import torch
import torch.nn as nn
import torch.nn.functional as F
from mmcv.cnn import build_norm_layer
from mmengine.logging import print_log
from torch.nn.init import trunc_normal_
from torch.nn.modules.batchnorm import _BatchNorm

from .base import MultiScaleBackbone, is_exporting, stage_drop_path_rates
from .checkpoints import efficientformer_v2 as _layouts  # noqa: F401  (registers the checkpoint layouts)
from .layers import DropPath, Subsample
from .registry import Paper, register_family

BIAS_MODES = ('official', 'table')


class ConvNorm(nn.Sequential):
    """Conv2d (with bias, as the official code) + BatchNorm, optionally + activation. The
    backbone replaces ``bn`` by a layer of its ``norm_cfg`` (BN, SyncBN)."""

    def __init__(self, in_ch: int, out_ch: int, kernel_size: int = 1, stride: int = 1, groups: int = 1,
                 act: bool = False) -> None:
        super().__init__()
        self.conv = nn.Conv2d(in_ch, out_ch, kernel_size, stride, kernel_size // 2, groups=groups)
        self.bn = nn.BatchNorm2d(out_ch)
        if act:
            self.act = nn.GELU()


class LayerScale2d(nn.Module):
    def __init__(self, dim: int, init_value: float) -> None:
        super().__init__()
        self.gamma = nn.Parameter(init_value * torch.ones(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.gamma.view(1, -1, 1, 1)


def _offset_index(q_hw: Tuple[int, int], k_hw: Tuple[int, int], q_step: int, table_w: int,
                  device: Optional[torch.device] = None) -> torch.Tensor:
    """(N_q, N_k) index into a row-major ``(|dy|, |dx|)`` table of width ``table_w``.

    Query cell ``(y, x)`` sits at key position ``(y * q_step, x * q_step)``. This equals the
    official code's dictionary of offsets, which meets every ``(dy, dx)`` in row-major order
    while walking the first query.
    """
    qy, qx = torch.meshgrid(torch.arange(q_hw[0], device=device) * q_step,
                            torch.arange(q_hw[1], device=device) * q_step, indexing='ij')
    ky, kx = torch.meshgrid(torch.arange(k_hw[0], device=device), torch.arange(k_hw[1], device=device),
                            indexing='ij')
    dy = (qy.reshape(-1, 1) - ky.reshape(1, -1)).abs()
    dx = (qx.reshape(-1, 1) - kx.reshape(1, -1)).abs()
    return dy * table_w + dx


class AttentionBias(nn.Module):
    """Learned relative-offset biases for one attention, adapted to any (query, key) grid.

    Args:
        num_heads: heads.
        key_grid: the base key grid ``(r, r)``; the table has ``r * r`` entries per head.
        q_step: query stride in key cells (2 for the downsampling attention, else 1).
        mode: ``'official'`` or ``'table'`` (see the module docstring).
    """

    def __init__(self, num_heads: int, key_grid: int, q_step: int, mode: str) -> None:
        super().__init__()
        self.mode = mode
        self.key_grid = key_grid
        self.q_step = q_step
        self.q_grid = math.ceil(key_grid / q_step)
        self.attention_biases = nn.Parameter(torch.zeros(num_heads, key_grid * key_grid))
        self.register_buffer(
            'attention_bias_idxs',
            _offset_index((self.q_grid, self.q_grid), (key_grid, key_grid), self._base_step(), key_grid),
            persistent=False)
        self._cache: Dict[tuple, torch.Tensor] = {}
        self._cache_version = -1

    def _base_step(self) -> int:
        # the official code steps queries by ceil(r / r2), i.e. 1 on a 1x1 grid
        return math.ceil(self.key_grid / self.q_grid)

    def compute(self, q_hw: Tuple[int, int], k_hw: Tuple[int, int]) -> torch.Tensor:
        """The (heads, N_q, N_k) bias for the given grids, through the autograd graph."""
        table = self.attention_biases
        base = (self.q_grid, self.q_grid), (self.key_grid, self.key_grid)
        if self.mode == 'official' or (tuple(q_hw), tuple(k_hw)) == base:
            bias = table[:, self.attention_bias_idxs]
            n_q, n_k = q_hw[0] * q_hw[1], k_hw[0] * k_hw[1]
            if bias.shape[-2:] != (n_q, n_k):
                bias = F.interpolate(bias.unsqueeze(0), size=(n_q, n_k), mode='bicubic',
                                     align_corners=False).squeeze(0)
            return bias
        r = self.key_grid
        grid = table.reshape(1, -1, r, r)
        if tuple(k_hw) != (r, r):
            grid = F.interpolate(grid, size=tuple(k_hw), mode='bicubic', align_corners=False)
        idx = _offset_index(q_hw, k_hw, self.q_step, k_hw[1], device=table.device)
        return grid.flatten(2)[0][:, idx]

    def freeze(self, q_hw: Tuple[int, int], k_hw: Tuple[int, int]) -> None:
        """Store the bias of one (query, key) grid as a buffer, for export at a fixed size:
        the exported graph then holds it as a constant instead of gathering and resizing."""
        with torch.no_grad():
            bias = self.compute(tuple(q_hw), tuple(k_hw)).detach().clone()
        self.register_buffer('frozen_bias', bias, persistent=False)
        self.frozen_grids = (tuple(q_hw), tuple(k_hw))

    def forward(self, q_hw: Tuple[int, int], k_hw: Tuple[int, int]) -> torch.Tensor:
        frozen = getattr(self, 'frozen_grids', None)
        if frozen is not None:
            if frozen != (tuple(q_hw), tuple(k_hw)):
                raise ValueError(f'this model was prepared for export with attention grids {frozen}; the input '
                                 f'gives {(tuple(q_hw), tuple(k_hw))}. Prepare it for this input size.')
            return self.frozen_bias
        if self.training or is_exporting():
            return self.compute(q_hw, k_hw)
        table = self.attention_biases
        # The table's version counter moves with every in-place update (optimizer or EMA
        # steps, load_state_dict, zero_() under no_grad), so a stale bias is never served:
        # the trap the official code's eval-time `self.ab` falls into.
        if self._cache_version != table._version:
            self._cache = {}
            self._cache_version = table._version
        key = (tuple(q_hw), tuple(k_hw), table.device, table.dtype)
        bias = self._cache.get(key)
        if bias is None:
            with torch.no_grad():
                bias = self.compute(q_hw, k_hw)
            self._cache[key] = bias
        return bias

    def clear_cache(self) -> None:
        self._cache = {}

    def train(self, mode: bool = True) -> 'AttentionBias':
        self.clear_cache()
        return super().train(mode)

    def _apply(self, fn, *args, **kwargs):
        self.clear_cache()
        return super()._apply(fn, *args, **kwargs)

    def _load_from_state_dict(self, *args, **kwargs):
        self.clear_cache()
        return super()._load_from_state_dict(*args, **kwargs)

    def resize_table(self, table: torch.Tensor) -> torch.Tensor:
        """A checkpoint's ``(heads, r'*r')`` table resized to this module's base grid."""
        heads, n = table.shape
        r_src = math.isqrt(n)
        if r_src * r_src != n:
            raise ValueError(f'attention-bias table with {n} entries is not a square grid')
        grid = table.float().reshape(1, heads, r_src, r_src)
        grid = F.interpolate(grid, size=(self.key_grid, self.key_grid), mode='bicubic', align_corners=False)
        return grid.reshape(heads, -1)  # float32: no second rounding of half-precision sources


def mix_heads(conv: nn.Conv2d, attn: torch.Tensor) -> torch.Tensor:
    """A talking-head 1x1 conv over the heads of ``attn`` (B, heads, N_q, N_k), as a batched
    matmul: the attention map stays in its (row-major) layout, where the conv would make
    channels-last delegates transpose it twice."""
    B, heads, n_q, n_k = attn.shape
    weight = conv.weight.reshape(1, heads, heads)
    if B != 1:  # also an empty batch
        weight = weight.expand(B, heads, heads)
    out = torch.bmm(weight, attn.reshape(B, heads, n_q * n_k)) + conv.bias.reshape(1, heads, 1)
    return out.reshape(B, heads, n_q, n_k)


class _HeadSizes(nn.Module):
    """The sizes both attentions share: ``num_heads`` heads of ``key_dim`` query / key
    channels and ``attn_ratio * key_dim`` value channels (``d``; ``dh`` over all heads)."""

    def __init__(self, key_dim: int, num_heads: int, attn_ratio: int) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.key_dim = key_dim
        self.scale = key_dim ** -0.5
        self.d = attn_ratio * key_dim
        self.dh = self.d * num_heads


class Attention2d(_HeadSizes):
    """Multi-head attention with talking heads and a local value branch (all convs + BN).

    With ``stride`` the queries, keys and values come from a stride-2 depth-wise conv and the
    result is upsampled back (bilinear) to the input size.
    """

    def __init__(self, dim: int, base_grid: int, bias_mode: str, key_dim: int = 32, num_heads: int = 8,
                 attn_ratio: int = 4, stride: Optional[int] = None) -> None:
        super().__init__(key_dim, num_heads, attn_ratio)
        if stride is not None:
            self.stride_conv = ConvNorm(dim, dim, 3, stride=stride, groups=dim)
            base_grid = math.ceil(base_grid / stride)
        else:
            self.stride_conv = None
        kh = key_dim * num_heads
        self.q = ConvNorm(dim, kh)
        self.k = ConvNorm(dim, kh)
        self.v = ConvNorm(dim, self.dh)
        self.v_local = ConvNorm(self.dh, self.dh, 3, groups=self.dh)
        self.talking_head1 = nn.Conv2d(num_heads, num_heads, 1)
        self.talking_head2 = nn.Conv2d(num_heads, num_heads, 1)
        self.act = nn.GELU()
        self.proj = ConvNorm(self.dh, dim)
        self.bias = AttentionBias(num_heads, base_grid, 1, bias_mode)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, _, H, W = x.shape
        if self.stride_conv is not None:
            x = self.stride_conv(x)
        h, w = x.shape[2], x.shape[3]
        n, heads = h * w, self.num_heads
        # 3-D batched matmuls over (batch * heads): no broadcast expand in the exported graph
        q = self.q(x).reshape(B * heads, self.key_dim, n).transpose(1, 2)
        k = self.k(x).reshape(B * heads, self.key_dim, n)
        v = self.v(x)
        v_local = self.v_local(v)
        v = v.reshape(B * heads, self.d, n).transpose(1, 2)

        attn = torch.bmm(q, k).reshape(B, heads, n, n) * self.scale + self.bias((h, w), (h, w))
        attn = mix_heads(self.talking_head1, attn).softmax(dim=-1)
        attn = mix_heads(self.talking_head2, attn).reshape(B * heads, n, n)
        out = torch.bmm(attn, v).transpose(1, 2).reshape(B, self.dh, h, w) + v_local
        if self.stride_conv is not None:
            out = F.interpolate(out, size=(H, W), mode='bilinear', align_corners=False)
        return self.proj(self.act(out))


class LocalGlobalQuery(nn.Module):
    """Stride-2 query: depth-wise conv + sub-sampling, then a 1x1 ConvNorm."""

    def __init__(self, in_dim: int, out_dim: int) -> None:
        super().__init__()
        self.local = nn.Conv2d(in_dim, in_dim, 3, stride=2, padding=1, groups=in_dim)
        self.pool = Subsample(in_dim, 2)
        self.proj = ConvNorm(in_dim, out_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(self.local(x) + self.pool(x))


class Attention2dDownsample(_HeadSizes):
    """Attention whose queries have stride 2: halves the resolution between stages 2 and 3."""

    def __init__(self, dim: int, out_dim: int, base_grid: int, bias_mode: str, key_dim: int = 16,
                 num_heads: int = 8, attn_ratio: int = 4) -> None:
        super().__init__(key_dim, num_heads, attn_ratio)
        kh = key_dim * num_heads
        self.q = LocalGlobalQuery(dim, kh)
        self.k = ConvNorm(dim, kh)
        self.v = ConvNorm(dim, self.dh)
        self.v_local = ConvNorm(self.dh, self.dh, 3, stride=2, groups=self.dh)
        self.act = nn.GELU()
        self.proj = ConvNorm(self.dh, out_dim)
        self.bias = AttentionBias(num_heads, base_grid, 2, bias_mode)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, _, H, W = x.shape
        q = self.q(x)
        h, w = q.shape[2], q.shape[3]
        heads = self.num_heads
        q = q.reshape(B * heads, self.key_dim, h * w).transpose(1, 2)
        k = self.k(x).reshape(B * heads, self.key_dim, H * W)
        v = self.v(x)
        v_local = self.v_local(v)
        v = v.reshape(B * heads, self.d, H * W).transpose(1, 2)

        attn = torch.bmm(q, k).reshape(B, heads, h * w, H * W) * self.scale + self.bias((h, w), (H, W))
        attn = attn.softmax(dim=-1).reshape(B * heads, h * w, H * W)
        out = torch.bmm(attn, v).transpose(1, 2).reshape(B, self.dh, h, w) + v_local
        return self.proj(self.act(out))


class Downsample(nn.Module):
    """Stride-2 3x3 ConvNorm, plus a downsampling attention between the last two stages."""

    def __init__(self, in_ch: int, out_ch: int, use_attn: bool, base_grid: int, bias_mode: str) -> None:
        super().__init__()
        self.conv = ConvNorm(in_ch, out_ch, 3, stride=2)
        self.attn = Attention2dDownsample(in_ch, out_ch, base_grid, bias_mode) if use_attn else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.conv(x)
        if self.attn is not None:
            out = out + self.attn(x)
        return out


class ConvMlp(nn.Module):
    """1x1 ConvNorm-GELU, 3x3 depth-wise ConvNorm-GELU, 1x1 ConvNorm."""

    def __init__(self, dim: int, hidden: int, drop: float = 0.) -> None:
        super().__init__()
        self.fc1 = ConvNorm(dim, hidden, act=True)
        self.mid = ConvNorm(hidden, hidden, 3, groups=hidden, act=True)
        self.drop1 = nn.Dropout(drop)
        self.fc2 = ConvNorm(hidden, dim)
        self.drop2 = nn.Dropout(drop)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.drop2(self.fc2(self.drop1(self.mid(self.fc1(x)))))


class EfficientFormerV2Block(nn.Module):
    """An MLP block, preceded by attention for the last ``num_vit`` blocks of stages 2 and 3."""

    def __init__(self, dim: int, mlp_ratio: float, use_attn: bool, base_grid: int, bias_mode: str,
                 attn_stride: Optional[int], drop: float, drop_path: float,
                 layer_scale_init_value: float) -> None:
        super().__init__()
        if use_attn:
            self.token_mixer = Attention2d(dim, base_grid, bias_mode, stride=attn_stride)
            self.ls1 = LayerScale2d(dim, layer_scale_init_value)
        else:
            self.token_mixer = None
            self.ls1 = None
        self.mlp = ConvMlp(dim, int(dim * mlp_ratio), drop)
        self.ls2 = LayerScale2d(dim, layer_scale_init_value)
        self.drop_path = DropPath(drop_path) if drop_path > 0 else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.token_mixer is not None:
            x = x + self.drop_path(self.ls1(self.token_mixer(x)))
        return x + self.drop_path(self.ls2(self.mlp(x)))

    @torch.no_grad()
    def fuse_for_export(self) -> None:
        """Fold the layer scales into the BatchNorms that end both branches (eval mode)."""
        branches = [('ls2', self.mlp.fc2)]
        if self.token_mixer is not None:
            branches.append(('ls1', self.token_mixer.proj))
        for name, closing in branches:
            scale = getattr(self, name)
            if isinstance(scale, LayerScale2d):
                closing.bn.weight.mul_(scale.gamma)
                closing.bn.bias.mul_(scale.gamma)
                setattr(self, name, nn.Identity())


class EfficientFormerV2Stage(nn.Module):
    """Optional downsampling, then blocks; the last ``num_vit`` blocks attend when ``use_attn``."""

    def __init__(self, in_ch: int, dim: int, depth: int, mlp_ratios: Sequence[float], downsample: bool,
                 downsample_attn: bool, prev_grid: int, num_vit: int, use_attn: bool,
                 attn_stride: Optional[int], base_grid: int, bias_mode: str, drop: float,
                 drop_paths: Sequence[float], layer_scale_init_value: float) -> None:
        super().__init__()
        self.downsample = (Downsample(in_ch, dim, downsample_attn, prev_grid, bias_mode)
                           if downsample else nn.Identity())
        self.blocks = nn.Sequential(*[
            EfficientFormerV2Block(dim, mlp_ratios[i], use_attn and i >= depth - num_vit, base_grid,
                                   bias_mode, attn_stride, drop, drop_paths[i], layer_scale_init_value)
            for i in range(depth)])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.blocks(self.downsample(x))


class Stem(nn.Sequential):
    """Two stride-2 3x3 ConvNorm-GELU layers: stride 4."""

    def __init__(self, in_ch: int, out_ch: int) -> None:
        super().__init__()
        self.conv1 = ConvNorm(in_ch, out_ch // 2, 3, stride=2, act=True)
        self.conv2 = ConvNorm(out_ch // 2, out_ch, 3, stride=2, act=True)


@register_family
class EfficientFormerV2(MultiScaleBackbone):
    """EfficientFormerV2 backbone for mmdet / mmseg.

    Args:
        arch: ``'s0'``, ``'s1'``, ``'s2'``, ``'l'`` or a dict with the keys of
            :attr:`arch_settings` (``depths``, ``widths``, ``mlp_ratios`` per block,
            ``num_vit``, ``drop_path_rate``).
        resolution: the input size the attention-bias tables are made for; each table's grid
            is ``ceil(resolution / stride)``. 224 is the ImageNet model; the official dense
            models use 800 (detection) and 512 (segmentation).
        bias_mode: ``'official'`` (resize the gathered N x N bias, as the official dense
            backbone) or ``'table'`` (resize the relative-offset table); see the module
            docstring.
        drop_rate: dropout in the MLPs.
        drop_path_rate: stochastic depth of the last block; ``None`` takes the arch's
            default (0, 0, 0.02, 0.1 for S0, S1, S2, L).
        layer_scale_init_value: initial layer scale.
        norm_cfg: the BatchNorm of every conv, built by ``mmcv.cnn.build_norm_layer``;
            None is ``dict(type='BN', requires_grad=True)``. The official dense recipe trains
            them as SyncBN (``dict(type='SyncBN', requires_grad=True)``, ``norm_eval=False``).
            Any BatchNorm type works (the weights hold BatchNorm statistics); parameter names
            stay ``.bn.``, so checkpoints load whatever the type.
        out_indices, frozen_stages, norm_eval, with_cp, init_cfg: see
            :class:`~backbones.base.MultiScaleBackbone`.

    Returns a tuple of NCHW features at strides 4, 8, 16, 32 (those in ``out_indices``): the
    raw stage outputs (official network indices 0, 2, 4, 6), without output norms.

    Example:
        >>> import torch
        >>> from backbones import EfficientFormerV2
        >>> model = EfficientFormerV2('s0', resolution=512).eval()
        >>> [tuple(o.shape) for o in model(torch.rand(1, 3, 97, 131))]
        [(1, 32, 25, 33), (1, 48, 13, 17), (1, 96, 7, 9), (1, 176, 4, 5)]
    """

    family = 'EfficientFormerV2'
    model_prefix = 'efficientformerv2'
    classifier_distillation = True
    timm_model = 'efficientformerv2_{arch}'
    paper = Paper(
        title='Rethinking Vision Transformers for MobileNet Size and Speed', url='https://arxiv.org/abs/2212.08059',
        code='https://github.com/snap-research/EfficientFormer',
        imagenet={'s0': dict(params='3.5', gmacs='0.40', top1='75.7'),
                  's1': dict(params='6.1', gmacs='0.65', top1='79.0'),
                  's2': dict(params='12.6', gmacs='1.25', top1='81.6'),
                  'l': dict(params='26.1', gmacs='2.56', top1='83.3')},
        downstream={
            'mask-rcnn_efficientformerv2-s2_fpn_8xb2-1x_coco': dict(box_ap='43.4', mask_ap='39.5'),
            'mask-rcnn_efficientformerv2-l_fpn_8xb2-1x_coco': dict(box_ap='44.7', mask_ap='40.4'),
            'fpn_efficientformerv2-s2_8xb4-40k_ade20k-512x512': dict(miou='42.4'),
            'fpn_efficientformerv2-l_8xb4-40k_ade20k-512x512': dict(miou='45.2'),
        })
    arch_settings = {
        's0': dict(depths=(2, 2, 6, 4), widths=(32, 48, 96, 176), num_vit=2, drop_path_rate=0.0,
                   mlp_ratios=((4, 4), (4, 4), (4, 3, 3, 3, 4, 4), (4, 3, 3, 4))),
        's1': dict(depths=(3, 3, 9, 6), widths=(32, 48, 120, 224), num_vit=2, drop_path_rate=0.0,
                   mlp_ratios=((4, 4, 4), (4, 4, 4), (4, 4, 3, 3, 3, 3, 4, 4, 4), (4, 4, 3, 3, 4, 4))),
        's2': dict(depths=(4, 4, 12, 8), widths=(32, 64, 144, 288), num_vit=4, drop_path_rate=0.02,
                   mlp_ratios=((4, 4, 4, 4), (4, 4, 4, 4), (4, 4, 3, 3, 3, 3, 3, 3, 4, 4, 4, 4),
                               (4, 4, 3, 3, 3, 3, 4, 4))),
        'l': dict(depths=(5, 5, 15, 10), widths=(40, 80, 192, 384), num_vit=6, drop_path_rate=0.1,
                  mlp_ratios=((4, 4, 4, 4, 4), (4, 4, 4, 4, 4),
                              (4, 4, 4, 4, 3, 3, 3, 3, 3, 3, 3, 4, 4, 4, 4), (4, 4, 4, 3, 3, 3, 3, 4, 4, 4))),
    }

    def __init__(self,
                 arch: Union[str, dict] = 's0',
                 resolution: int = 224,
                 bias_mode: str = 'official',
                 drop_rate: float = 0.,
                 drop_path_rate: Optional[float] = None,
                 layer_scale_init_value: float = 1e-5,
                 out_indices: Sequence[int] = (0, 1, 2, 3),
                 frozen_stages: int = -1,
                 norm_cfg: Optional[dict] = None,
                 norm_eval: bool = False,
                 with_cp: bool = False,
                 in_channels: int = 3,
                 init_cfg: Optional[Union[dict, list]] = None) -> None:
        super().__init__(out_indices, frozen_stages, norm_eval, with_cp, in_channels, init_cfg)
        if bias_mode not in BIAS_MODES:
            raise ValueError(f'EfficientFormerV2: bias_mode must be one of {BIAS_MODES}, got {bias_mode!r}')
        if not isinstance(resolution, int) or resolution < 32:
            raise ValueError(f'EfficientFormerV2: resolution must be an int >= 32 (the input size the '
                             f'attention-bias tables are made for), got {resolution!r}')
        self.arch = self.resolve_arch(arch)
        self.arch_name = arch.lower() if isinstance(arch, str) else 'custom'
        self.resolution = resolution
        self.bias_mode = bias_mode
        depths, widths = self.arch['depths'], self.arch['widths']
        for i, (d, ratios) in enumerate(zip(depths, self.arch['mlp_ratios'])):
            if len(ratios) != d:
                raise ValueError(f'EfficientFormerV2: arch mlp_ratios[{i}] has {len(ratios)} entries for '
                                 f'{d} blocks; give one ratio per block')
        self.stage_channels = tuple(widths)
        if drop_path_rate is None:
            drop_path_rate = self.arch['drop_path_rate']
        dprs = stage_drop_path_rates(depths, drop_path_rate)
        self.stem = Stem(in_channels, widths[0])
        stages = []
        for i, depth in enumerate(depths):
            stages.append(EfficientFormerV2Stage(
                widths[i - 1] if i else widths[0], widths[i], depth, self.arch['mlp_ratios'][i],
                downsample=i > 0, downsample_attn=i >= 3, prev_grid=math.ceil(resolution / 2 ** (i + 1)),
                num_vit=self.arch['num_vit'], use_attn=i >= 2, attn_stride=2 if i == 2 else None,
                base_grid=math.ceil(resolution / 2 ** (i + 2)), bias_mode=bias_mode, drop=drop_rate,
                drop_paths=dprs[i], layer_scale_init_value=layer_scale_init_value))
        self.stages = nn.ModuleList(stages)
        self.norm_cfg = dict(type='BN', requires_grad=True) if norm_cfg is None else dict(norm_cfg)
        self._build_norms()
        self.apply(self._init_module)
        self._register_converting_hook()
        self._finish_init()

    def _build_norms(self) -> None:
        # in place, so the module names (and the state dict's `.bn.` keys) stay as they are
        for conv_norm in [m for m in self.modules() if isinstance(m, ConvNorm)]:
            norm = build_norm_layer(self.norm_cfg, conv_norm.bn.num_features)[1]
            if not isinstance(norm, _BatchNorm):
                raise ValueError(f'EfficientFormerV2: norm_cfg must build a BatchNorm (BN, SyncBN), the '
                                 f'layer every checkpoint holds statistics for; got {type(norm).__name__} '
                                 f'from {self.norm_cfg}')
            conv_norm.bn = norm

    @staticmethod
    def _init_module(m: nn.Module) -> None:
        # The official initialisation: truncated normal for linear layers and the MLPs' 1x1
        # convs. The official Mlp initialises before it creates its depth-wise `mid` conv,
        # which therefore keeps PyTorch's default initialisation; so does ours.
        if isinstance(m, (nn.Linear,)):
            trunc_normal_(m.weight, std=.02)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, ConvMlp):
            for conv in (m.fc1.conv, m.fc2.conv):
                trunc_normal_(conv.weight, std=.02)
                nn.init.zeros_(conv.bias)

    @classmethod
    def size_kwargs(cls, size: Tuple[int, int]) -> Dict[str, Any]:
        """The attention-bias tables are made for the larger side of the input."""
        return dict(resolution=max(size))

    @torch.no_grad()
    def prepare_export(self, size: Tuple[int, int]) -> None:
        """Freeze every attention bias for inputs of ``size``: one eval forward records the
        grids each attention sees, then the biases become constant buffers of that size."""
        biases = [m for m in self.modules() if isinstance(m, AttentionBias)]
        for m in biases:
            m.clear_cache()
        self(torch.zeros(1, 3, *size))
        for m in biases:
            [(q_hw, k_hw, _, _)] = list(m._cache.keys())
            m.freeze(q_hw, k_hw)
            m.clear_cache()

    def adapt_state_dict(self, state_dict: Dict[str, torch.Tensor],
                         from_classifier: bool) -> Dict[str, torch.Tensor]:
        """Fit bias tables made for another base grid: resized (``'table'``) or left at zero
        (``'official'``, as the official dense recipe does with ImageNet weights)."""
        own = dict(self.named_modules())
        out = dict(state_dict)
        resized, skipped = [], []
        for key, value in state_dict.items():
            if not key.endswith('bias.attention_biases'):
                continue
            module = own.get(key[:-len('.attention_biases')])
            if not isinstance(module, AttentionBias) or value.shape == module.attention_biases.shape:
                continue
            if value.shape[0] != module.attention_biases.shape[0]:
                continue  # a different arch: reported by the shape check
            if self.bias_mode == 'table':
                out[key] = module.resize_table(value)
                resized.append(key)
            elif from_classifier:
                del out[key]
                skipped.append(key)
            else:
                r_src = math.isqrt(value.shape[1])
                raise ValueError(
                    f'EfficientFormerV2: the checkpoint\'s attention-bias table {key} was made for a '
                    f'{r_src}x{r_src} grid, this model (resolution={self.resolution}) uses '
                    f'{module.key_grid}x{module.key_grid}. Set resolution to the value the checkpoint was '
                    "trained with, or bias_mode='table' to resize the tables.")
        if resized:
            print_log(f'EfficientFormerV2: resized {len(resized)} attention-bias tables to the base grid of '
                      f'resolution={self.resolution} (bias_mode=\'table\')', logger='current')
        if skipped:
            print_log(f'EfficientFormerV2: {len(skipped)} attention-bias tables of the classification '
                      f'checkpoint do not fit resolution={self.resolution}; they start at zero as in the '
                      "official dense recipe (bias_mode='table' resizes them instead)",
                      logger='current')
        return out
