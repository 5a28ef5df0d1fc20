"""EdgeViT (Pan et al., ECCV 2022) as a multi-scale backbone.

Architecture as saic-fi/edgevit ``src/edgevit.py``: four stages, each a patch embedding
(strided conv + LayerNorm) followed by Local-Global-Local blocks. A block is a local
aggregation (depth-wise convs, only where the stage's sparse ratio is > 1) and a global
sparse attention (attention between every ``sr``-th token, propagated back with a
transposed depth-wise conv). Generalised to any input size: patch embeddings pad the input
to a multiple of their stride (bottom/right), and the sparse attention crops its
propagated output back to the token grid, so stage ``i`` has size ``ceil(H / 2**(i+2))``.

The features stay NCHW throughout: LayerNorms normalise channels in place and the token
linears (``qkv``, ``proj``, the MLP) run as the equal 1x1 convolutions, with the official
parameter shapes. Mobile delegates that keep images channels-last then need no layout
change between the convolutional and the attention parts of a block.
"""
from __future__ import annotations

from typing import Optional, Sequence, Union

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.nn.init import trunc_normal_

from .base import MultiScaleBackbone, stage_drop_path_rates
from .checkpoints import edgevit as _layouts  # noqa: F401  (registers EdgeViT's checkpoint layouts)
from .layers import DropPath, LayerNorm2d, Linear2d, Subsample, batch_norm_affine, fold_affine_into_pointwise
from .registry import Paper, register_family


class PatchEmbed(nn.Module):
    """Strided conv + LayerNorm over channels; pads H and W up to a multiple of the stride."""

    def __init__(self, in_channels: int, out_channels: int, patch_size: int) -> None:
        super().__init__()
        self.patch_size = patch_size
        self.proj = nn.Conv2d(in_channels, out_channels, kernel_size=patch_size, stride=patch_size)
        self.norm = LayerNorm2d(out_channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        p = self.patch_size
        pad_h, pad_w = (-x.shape[2]) % p, (-x.shape[3]) % p
        if pad_h or pad_w:
            x = F.pad(x, (0, pad_w, 0, pad_h))
        return self.norm(self.proj(x))


class ConvMlp(nn.Module):
    """1x1 conv -> GELU -> 1x1 conv."""

    def __init__(self, dim: int, hidden: int, drop: float = 0.) -> None:
        super().__init__()
        self.fc1 = nn.Conv2d(dim, hidden, 1)
        self.act = nn.GELU()
        self.fc2 = nn.Conv2d(hidden, dim, 1)
        self.drop = nn.Dropout(drop)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.drop(self.fc2(self.drop(self.act(self.fc1(x)))))


class Mlp(nn.Module):
    """Linear -> GELU -> Linear per token, applied to an NCHW map as 1x1 convolutions."""

    def __init__(self, dim: int, hidden: int, drop: float = 0.) -> None:
        super().__init__()
        self.fc1 = Linear2d(dim, hidden)
        self.act = nn.GELU()
        self.fc2 = Linear2d(hidden, dim)
        self.drop = nn.Dropout(drop)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.drop(self.fc2(self.drop(self.act(self.fc1(x)))))


class LocalAggregation(nn.Module):
    """Local aggregation: depth-wise 5x5 between two 1x1 convs, then a conv MLP (all BN)."""

    def __init__(self, dim: int, mlp_ratio: float, drop: float, drop_path: float) -> None:
        super().__init__()
        self.pos_embed = nn.Conv2d(dim, dim, 3, padding=1, groups=dim)
        self.norm1 = nn.BatchNorm2d(dim)
        self.conv1 = nn.Conv2d(dim, dim, 1)
        self.dw_conv = nn.Conv2d(dim, dim, 5, padding=2, groups=dim)
        self.conv2 = nn.Conv2d(dim, dim, 1)
        self.norm2 = nn.BatchNorm2d(dim)
        self.mlp = ConvMlp(dim, int(dim * mlp_ratio), drop)
        self.drop_path = DropPath(drop_path) if drop_path > 0 else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.pos_embed(x)
        x = x + self.drop_path(self.conv2(self.dw_conv(self.conv1(self.norm1(x)))))
        return x + self.drop_path(self.mlp(self.norm2(x)))

    def fuse_for_export(self) -> None:
        """Fold both BatchNorms (eval statistics) into the 1x1 convs that follow them."""
        fold_affine_into_pointwise(*batch_norm_affine(self.norm1), self.conv1)
        fold_affine_into_pointwise(*batch_norm_affine(self.norm2), self.mlp.fc1)
        self.norm1, self.norm2 = nn.Identity(), nn.Identity()


class PatchSpread(nn.ConvTranspose2d):
    """The depth-wise transposed convolution whose kernel equals its stride (the official
    ``LocalProp``): each token spreads over its own ``s x s`` patch, weighted per channel.

    Computed as a broadcast product, which is exactly ``conv_transpose2d`` here (one term
    per output) and avoids grouped deconvolutions, which mobile delegates run slowly
    (XNNPACK runs them at a fraction of a convolution's rate).
    """

    def __init__(self, channels: int, stride: int) -> None:
        super().__init__(channels, channels, stride, stride=stride, groups=channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # tensors of rank <= 5 (Core ML's limit): the rows go to the batch dimension while
        # each token is multiplied by its channel's s x s kernel
        B, C, h, w = x.shape
        s = self.stride[0]
        rows = x.transpose(1, 2).reshape(B * h, C, 1, w, 1)
        out = (rows * self.weight.reshape(1, C, s, 1, s)).reshape(B, h, C, s, w * s)
        out = out.transpose(1, 2).reshape(B, C, h * s, w * s)
        if self.bias is not None:
            out = out + self.bias.reshape(1, C, 1, 1)
        return out


class SparseAttention(nn.Module):
    """Multi-head attention among every ``sr``-th token, propagated back by a transposed conv."""

    def __init__(self, dim: int, num_heads: int, qkv_bias: bool, sr_ratio: int,
                 attn_drop: float = 0., proj_drop: float = 0.) -> None:
        super().__init__()
        if dim % num_heads:
            raise ValueError(f'EdgeViT: width {dim} is not divisible by {num_heads} heads')
        self.num_heads = num_heads
        self.scale = (dim // num_heads) ** -0.5
        self.sr_ratio = sr_ratio
        self.qkv = Linear2d(dim, dim * 3, bias=qkv_bias)
        self.attn_drop = nn.Dropout(attn_drop)
        self.proj = Linear2d(dim, dim)
        self.proj_drop = nn.Dropout(proj_drop)
        if sr_ratio > 1:
            self.sample = Subsample(dim, sr_ratio)
            self.local_prop = PatchSpread(dim, sr_ratio)
            self.norm = LayerNorm2d(dim)

    def forward(self, x: torch.Tensor, norm: Optional[nn.Module] = None) -> torch.Tensor:
        """x: (B, C, H, W) features; returns (B, C, H, W). ``norm``, a per-token LayerNorm,
        is applied after the sub-sampling: it commutes with keeping every ``sr``-th token
        (same values, bit for bit) and then normalises ``sr**2`` times fewer tokens."""
        B, C, H, W = x.shape
        sr = self.sr_ratio
        if sr > 1:
            x = self.sample(x)  # every sr-th token
        if norm is not None:
            x = norm(x)
        h, w = x.shape[2], x.shape[3]
        n, heads, hd = h * w, self.num_heads, C // self.num_heads
        qkv = self.qkv(x)
        # channel slices split into heads as (B * heads, hd, n), and 3-D batched matmuls: no
        # unbind or broadcast expand in the exported graph, and the output comes out NCHW
        # (a list, not a generator: torch 2.1's dynamo cannot unpack a generator)
        q, k, v = [qkv[:, i * C:(i + 1) * C].reshape(B * heads, hd, n) for i in range(3)]
        attn = torch.bmm(q.transpose(1, 2), k) * self.scale
        attn = self.attn_drop(attn.softmax(dim=-1))
        out = torch.bmm(v, attn.transpose(1, 2)).reshape(B, C, h, w)
        if sr > 1:
            out = self.local_prop(out)
            if out.shape[2] != H or out.shape[3] != W:
                out = out[:, :, :H, :W]
            out = self.norm(out)
        return self.proj_drop(self.proj(out))


class GlobalAttention(nn.Module):
    """Conditional position encoding, sparse self-attention and an MLP."""

    def __init__(self, dim: int, num_heads: int, mlp_ratio: float, qkv_bias: bool, sr_ratio: int,
                 drop: float, attn_drop: float, drop_path: float) -> None:
        super().__init__()
        self.pos_embed = nn.Conv2d(dim, dim, 3, padding=1, groups=dim)
        self.norm1 = LayerNorm2d(dim, eps=1e-6)
        self.attn = SparseAttention(dim, num_heads, qkv_bias, sr_ratio, attn_drop, drop)
        self.norm2 = LayerNorm2d(dim, eps=1e-6)
        self.mlp = Mlp(dim, int(dim * mlp_ratio), drop)
        self.drop_path = DropPath(drop_path) if drop_path > 0 else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.pos_embed(x)
        x = x + self.drop_path(self.attn(x, self.norm1))
        return x + self.drop_path(self.mlp(self.norm2(x)))

    def fuse_for_export(self) -> None:
        """Fold the LayerNorms' affine parameters into the 1x1 convs that follow them (the
        sparse attention's sub-sampling commutes with a per-channel affine)."""
        pairs = [(self.norm1, self.attn.qkv), (self.norm2, self.mlp.fc1)]
        if self.attn.sr_ratio > 1:
            pairs.append((self.attn.norm, self.attn.proj))
        for norm, layer in pairs:
            if norm.weight is not None:
                fold_affine_into_pointwise(norm.weight, norm.bias, layer)
                norm.weight, norm.bias = None, None


class LGLBlock(nn.Module):
    """Local aggregation (when ``sr_ratio > 1``) followed by global sparse attention."""

    def __init__(self, dim: int, num_heads: int, mlp_ratio: float, qkv_bias: bool, sr_ratio: int,
                 drop: float = 0., attn_drop: float = 0., drop_path: float = 0.) -> None:
        super().__init__()
        self.local_agg = LocalAggregation(dim, mlp_ratio, drop, drop_path) if sr_ratio > 1 else nn.Identity()
        self.global_attn = GlobalAttention(dim, num_heads, mlp_ratio, qkv_bias, sr_ratio, drop,
                                           attn_drop, drop_path)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.global_attn(self.local_agg(x))


class EdgeViTStage(nn.Module):
    def __init__(self, in_channels: int, dim: int, patch_size: int, depth: int, num_heads: int,
                 mlp_ratio: float, qkv_bias: bool, sr_ratio: int, drop: float, attn_drop: float,
                 drop_paths: Sequence[float]) -> None:
        super().__init__()
        self.downsample = PatchEmbed(in_channels, dim, patch_size)
        self.blocks = nn.Sequential(*[
            LGLBlock(dim, num_heads, mlp_ratio, qkv_bias, sr_ratio, drop, attn_drop, drop_paths[i])
            for i in range(depth)])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.blocks(self.downsample(x))


@register_family
class EdgeViT(MultiScaleBackbone):
    """EdgeViT backbone for mmdet / mmseg.

    Args:
        arch: ``'xxs'``, ``'xs'``, ``'s'`` or a dict with the keys of :attr:`arch_settings`
            (``depths``, ``widths``, ``head_dim``, ``mlp_ratio``, ``sr_ratios``, ``qkv_bias``).
        drop_rate / attn_drop_rate: dropout after projections / on attention weights.
        drop_path_rate: stochastic depth rate of the last block (rising linearly from 0).
        layer_norm_eps: eps of the LayerNorms before each block's attention and MLP: the
            official 1e-6. EasyCV's EdgeViT, which made the only published EdgeViT weights,
            uses 1e-8 there; set 1e-8 to reproduce its outputs exactly.
        out_indices, frozen_stages, norm_eval, with_cp, init_cfg: see
            :class:`~backbones.base.MultiScaleBackbone`.

    Returns a tuple of NCHW features at strides 4, 8, 16, 32 (those in ``out_indices``):
    the outputs of the stages' blocks, before the classifier's final BatchNorm.

    Example:
        >>> import torch
        >>> from backbones import EdgeViT
        >>> model = EdgeViT('xxs').eval()
        >>> [tuple(o.shape) for o in model(torch.rand(1, 3, 97, 131))]
        [(1, 36, 25, 33), (1, 72, 13, 17), (1, 144, 7, 9), (1, 288, 4, 5)]
    """

    family = 'EdgeViT'
    model_prefix = 'edgevit'
    # figures as printed (../shared/PAPERS.md). EdgeViT-S: the official code's 1,2,5,3 model
    # (13.1M with the classifier); the paper's table prints 11.1M.
    paper = Paper(
        title='EdgeViTs: Competing Light-weight CNNs on Mobile Devices with Vision Transformers',
        url='https://arxiv.org/abs/2205.03436', code='https://github.com/saic-fi/edgevit',
        imagenet={'xxs': dict(params='4.1', gmacs='0.6', top1='74.4'),
                  'xs': dict(params='6.7', gmacs='1.1', top1='77.5'),
                  's': dict(params='13.1', gmacs='1.9', top1='81.0')},
        downstream={
            'retinanet_edgevit-xxs_fpn_8xb2-1x_coco': dict(params='13.1', box_ap='38.7'),
            'retinanet_edgevit-xs_fpn_8xb2-1x_coco': dict(params='16.3', box_ap='40.6'),
            'retinanet_edgevit-s_fpn_8xb2-1x_coco': dict(params='22.6', box_ap='43.4'),
            'mask-rcnn_edgevit-xxs_fpn_8xb2-1x_coco': dict(params='23.8', box_ap='39.9', mask_ap='36.9'),
            'mask-rcnn_edgevit-xs_fpn_8xb2-1x_coco': dict(params='26.5', box_ap='41.4', mask_ap='38.3'),
            'mask-rcnn_edgevit-s_fpn_8xb2-1x_coco': dict(params='32.8', box_ap='44.8', mask_ap='41.0'),
            'fpn_edgevit-xxs_8xb4-40k_ade20k-512x512': dict(params='7.9', gflops='24.4', miou='39.7'),
            'fpn_edgevit-xs_8xb4-40k_ade20k-512x512': dict(params='10.6', gflops='27.7', miou='41.4'),
            'fpn_edgevit-s_8xb4-40k_ade20k-512x512': dict(params='16.9', gflops='32.1', miou='45.9'),
        })
    # The official code's variants. EdgeViT-S is the code's 1,2,5,3 version (13.1M params with
    # the classifier; the paper's table prints 11.1M but every downstream count uses this one).
    arch_settings = {
        'xxs': dict(depths=(1, 1, 3, 2), widths=(36, 72, 144, 288), head_dim=36, mlp_ratio=4.,
                    sr_ratios=(4, 2, 2, 1), qkv_bias=True),
        'xs': dict(depths=(1, 1, 3, 1), widths=(48, 96, 240, 384), head_dim=48, mlp_ratio=4.,
                   sr_ratios=(4, 2, 2, 1), qkv_bias=True),
        's': dict(depths=(1, 2, 5, 3), widths=(48, 96, 240, 384), head_dim=48, mlp_ratio=4.,
                  sr_ratios=(4, 2, 2, 1), qkv_bias=True),
    }

    def __init__(self,
                 arch: Union[str, dict] = 'xxs',
                 drop_rate: float = 0.,
                 attn_drop_rate: float = 0.,
                 drop_path_rate: float = 0.,
                 layer_norm_eps: float = 1e-6,
                 out_indices: Sequence[int] = (0, 1, 2, 3),
                 frozen_stages: int = -1,
                 norm_eval: bool = False,
                 with_cp: bool = False,
                 in_channels: int = 3,
                 init_cfg: Optional[Union[dict, list]] = None) -> None:
        super().__init__(out_indices, frozen_stages, norm_eval, with_cp, in_channels, init_cfg)
        self.arch = self.resolve_arch(arch)
        self.arch_name = arch.lower() if isinstance(arch, str) else 'custom'
        depths, widths = self.arch['depths'], self.arch['widths']
        head_dim = self.arch['head_dim']
        if not isinstance(head_dim, int) or head_dim < 1 or any(w < head_dim for w in widths):
            raise ValueError(f'EdgeViT: arch widths {tuple(widths)} with head_dim={head_dim!r} leave a stage with '
                             'no attention head (heads = width // head_dim); make every width a multiple of '
                             'head_dim (e.g. widths (36, 72, 144, 288) with head_dim 36), or lower head_dim')
        self.stage_channels = tuple(widths)
        dprs = stage_drop_path_rates(depths, drop_path_rate)
        self.stem = nn.Identity()  # stage 0's patch embedding is the stem
        stages = []
        in_ch = in_channels
        for i, (depth, dim) in enumerate(zip(depths, widths)):
            stages.append(EdgeViTStage(
                in_ch, dim, patch_size=4 if i == 0 else 2, depth=depth,
                num_heads=dim // self.arch['head_dim'], mlp_ratio=self.arch['mlp_ratio'],
                qkv_bias=self.arch['qkv_bias'], sr_ratio=self.arch['sr_ratios'][i], drop=drop_rate,
                attn_drop=attn_drop_rate, drop_paths=dprs[i]))
            in_ch = dim
        self.stages = nn.ModuleList(stages)
        self.layer_norm_eps = layer_norm_eps
        # the blocks' pre-norms: the only LayerNorms whose eps differs between implementations
        for block in self.modules():
            if isinstance(block, GlobalAttention):
                block.norm1.eps = block.norm2.eps = layer_norm_eps
        self.apply(self._init_module)
        self._register_converting_hook()
        self._finish_init()

    def _frozen_modules(self):
        if self.frozen_stages < 0:
            return []
        # frozen_stages=0 freezes the stem, which for EdgeViT is stage 0's patch embedding
        return [self.stages[0].downsample] + [self.stages[i] for i in range(self.frozen_stages)]

    @staticmethod
    def _init_module(m: nn.Module) -> None:
        # the official initialisation
        if isinstance(m, nn.Linear):
            trunc_normal_(m.weight, std=.02)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.LayerNorm):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)
