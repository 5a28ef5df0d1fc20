"""Preparing models for export to mobile runtimes (ExecuTorch/XNNPACK, ONNX, Core ML, TFLite).

:func:`prepare_for_export` returns a copy of a backbone, detector or segmentor for one
fixed input size with equal outputs, in operators that mobile delegates accept:

* every backbone's :meth:`~backbones.base.MultiScaleBackbone.prepare_export` hook makes what
  depends on the input size constant (EfficientFormerV2: its attention biases become
  buffers of that size, with no gather and no bicubic resize in the graph);
* LayerNorms compute their mean and variance by a product with a constant 1/C vector: a
  1x1 convolution for the channels of an NCHW map (:class:`~backbones.layers.LayerNorm2d`,
  so the map stays channels-last inside XNNPACK), a linear layer over a last dimension
  (XNNPACK has no LayerNorm and averages 4-D tensors over space only);
* dropout layers (identities in eval mode) are removed: ``torch.export`` records an eval-mode
  ``nn.Dropout`` as a ``clone``, which XNNPACK runs as a full copy of the feature map;
* :class:`~backbones.layers.Linear2d` becomes the equal ``nn.Conv2d`` (constant 4-D
  weights) and :class:`~backbones.layers.Subsample` a unit depth-wise strided conv
  (XNNPACK rejects quantised 1x1 average pools);
* modules with a ``fuse_for_export()`` method fold what eval mode makes constant: EdgeViT's
  BatchNorms and LayerNorm affines into the 1x1 convs after them, EfficientFormerV2's layer
  scales into the BatchNorms before them.

The models' own forwards already avoid what delegates refuse or run slowly (broadcast 4-D
matmuls, ``unbind``, average pools counting padding, grouped deconvolutions, layout round
trips between channels-first maps and tokens), so nothing is patched in the exported graph.
"""
from __future__ import annotations

import copy
from typing import Tuple

import torch
import torch.nn as nn

from ..base import MultiScaleBackbone
from ..layers import LayerNorm2d, Linear2d, Subsample


class _ProductLayerNorm(nn.Module):
    """A LayerNorm whose mean and variance come from a product with a constant ``1/C``
    weight (``self.reduce``); built from linear or conv / sub / mul / rsqrt, which XNNPACK,
    Core ML and TFLite all delegate. ``shape`` is how the per-channel affine broadcasts."""

    def __init__(self, norm: nn.LayerNorm, mean_shape: Tuple[int, ...], shape: Tuple[int, ...]) -> None:
        super().__init__()
        if len(norm.normalized_shape) != 1:
            raise ValueError(f'{type(self).__name__} normalises over one dimension only')
        dim = norm.normalized_shape[0]
        self.eps = norm.eps
        self.register_buffer('mean_weight', torch.full(mean_shape, 1.0 / dim), persistent=False)
        self.weight = nn.Parameter(norm.weight.detach().clone().view(shape)) if norm.weight is not None else None
        self.bias = nn.Parameter(norm.bias.detach().clone().view(shape)) if norm.bias is not None else None

    def reduce(self, x: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        centred = x - self.reduce(x)
        out = centred * torch.rsqrt(self.reduce(centred * centred) + self.eps)
        if self.weight is not None:
            out = out * self.weight
        if self.bias is not None:
            out = out + self.bias
        return out


class MatmulLayerNorm(_ProductLayerNorm):
    """``nn.LayerNorm`` over the last dimension, statistics by a matrix product."""

    def __init__(self, norm: nn.LayerNorm) -> None:
        dim = norm.normalized_shape[0]
        super().__init__(norm, (1, dim), (dim,))

    def reduce(self, x: torch.Tensor) -> torch.Tensor:
        return nn.functional.linear(x, self.mean_weight)


class ConvLayerNorm2d(_ProductLayerNorm):
    """:class:`~backbones.layers.LayerNorm2d` (channels of an NCHW map), statistics by a 1x1
    convolution to one channel, so the map stays channels-last inside XNNPACK."""

    def __init__(self, norm: LayerNorm2d) -> None:
        dim = norm.normalized_shape[0]
        super().__init__(norm, (1, dim, 1, 1), (1, dim, 1, 1))

    def reduce(self, x: torch.Tensor) -> torch.Tensor:
        return nn.functional.conv2d(x, self.mean_weight)


def _replace_for_delegates(module: nn.Module) -> None:
    """Swap in the export forms: 1x1 convs for :class:`Linear2d` and :class:`Subsample`,
    LayerNorms by products, identities for dropout layers (eval mode)."""
    for name, child in module.named_children():
        if isinstance(child, nn.modules.dropout._DropoutNd):
            setattr(module, name, nn.Identity())
        elif isinstance(child, (Linear2d, Subsample)):
            setattr(module, name, child.to_conv())
        elif isinstance(child, LayerNorm2d):
            setattr(module, name, ConvLayerNorm2d(child))
        elif isinstance(child, nn.LayerNorm):
            setattr(module, name, MatmulLayerNorm(child))
        else:
            _replace_for_delegates(child)


def _input_backbone(model: nn.Module) -> nn.Module:
    return getattr(model, 'backbone', model)


def prepare_for_export(model: nn.Module, input_size: Tuple[int, int]) -> nn.Module:
    """An eval-mode copy of ``model`` (a backbone, or a model with ``.backbone``) ready to be
    exported for inputs of ``input_size`` (H, W). The original is left untouched."""
    model = copy.deepcopy(model).eval()
    backbone = _input_backbone(model)
    h, w = input_size
    if hasattr(backbone, 'check_input'):
        backbone.check_input(torch.zeros(1, 3, h, w))
    for m in list(model.modules()):
        if isinstance(m, MultiScaleBackbone):
            m.prepare_export((h, w))
    for m in list(model.modules()):
        if hasattr(m, 'fuse_for_export'):
            m.fuse_for_export()
    _replace_for_delegates(model)
    return model
