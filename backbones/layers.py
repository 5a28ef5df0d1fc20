"""Small layers shared by both families."""
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
