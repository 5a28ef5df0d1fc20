"""Small layers shared by both families."""
from typing import Tuple

import torch
import torch.nn as nn


class DropPath(nn.Module):
    """Stochastic depth: drop the whole residual branch per sample while training."""

    def __init__(self, drop_prob: float = 0.) -> None:
        super().__init__()
        self.drop_prob = drop_prob

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.drop_prob == 0. or not self.training:
            return x
        keep = 1. - self.drop_prob
        mask = x.new_empty((x.shape[0],) + (1,) * (x.dim() - 1)).bernoulli_(keep)
        return x * mask / keep

    def extra_repr(self) -> str:
        return f'drop_prob={self.drop_prob}'


class LayerNorm2d(nn.LayerNorm):
    """LayerNorm over the channels of an NCHW tensor (parameters and state dict as
    ``nn.LayerNorm(channels)``), so a network can stay channels-first throughout."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = nn.functional.layer_norm(x.permute(0, 2, 3, 1), self.normalized_shape, self.weight, self.bias, self.eps)
        return x.permute(0, 3, 1, 2)


class Linear2d(nn.Linear):
    """A token-wise linear layer applied to an NCHW map as the equal 1x1 convolution: the
    parameters and checkpoints of ``nn.Linear``, without reshaping the map into tokens."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return nn.functional.conv2d(x, self.weight[:, :, None, None], self.bias)

    def to_conv(self) -> nn.Conv2d:
        """The equal ``nn.Conv2d`` (constant 4-D weights, for export)."""
        conv = nn.Conv2d(self.in_features, self.out_features, 1, bias=self.bias is not None)
        with torch.no_grad():
            conv.weight.copy_(self.weight[:, :, None, None])
            if self.bias is not None:
                conv.bias.copy_(self.bias)
        return conv.to(self.weight.device, self.weight.dtype)


def batch_norm_affine(bn: nn.BatchNorm2d) -> Tuple[torch.Tensor, torch.Tensor]:
    """The per-channel ``(scale, shift)`` an eval-mode BatchNorm applies."""
    scale = bn.running_var.add(bn.eps).rsqrt()
    if bn.weight is not None:
        scale = scale * bn.weight
    shift = -bn.running_mean * scale
    if bn.bias is not None:
        shift = shift + bn.bias
    return scale, shift


@torch.no_grad()
def fold_affine_into_pointwise(scale: torch.Tensor, shift: torch.Tensor, layer: nn.Module) -> None:
    """Edit a 1x1 conv or :class:`Linear2d` in place so that ``layer(x)`` equals the old
    ``layer(x * scale + shift)`` (per-channel scale and shift of its input)."""
    weight = layer.weight
    flat = weight.reshape(weight.shape[0], weight.shape[1])
    extra = flat @ shift.to(weight)
    if layer.bias is None:
        layer.bias = nn.Parameter(extra)
    else:
        layer.bias.add_(extra)
    weight.mul_(scale.to(weight).reshape(1, -1, *([1] * (weight.dim() - 2))))


class Subsample(nn.Module):
    """Keep every ``stride``-th cell of an NCHW map: the official code's 1x1 average pool
    with a stride. For export it becomes :meth:`to_conv`, because XNNPACK rejects quantised
    1x1 average pools at run time."""

    def __init__(self, channels: int, stride: int) -> None:
        super().__init__()
        self.channels = channels
        self.stride = stride

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # count_include_pad changes nothing without padding; False is what delegates accept
        return nn.functional.avg_pool2d(x, kernel_size=1, stride=self.stride, count_include_pad=False)

    def to_conv(self) -> nn.Conv2d:
        """The equal depth-wise 1x1 strided conv with unit weights (exact in float)."""
        conv = nn.Conv2d(self.channels, self.channels, 1, stride=self.stride, groups=self.channels, bias=False)
        nn.init.ones_(conv.weight)
        conv.weight.requires_grad_(False)
        return conv

    def extra_repr(self) -> str:
        return f'channels={self.channels}, stride={self.stride}'
