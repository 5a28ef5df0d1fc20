"""prepare_for_export: equal outputs, and graphs made of what mobile delegates accept."""
import pytest
import torch

from backbones import EdgeViT, EfficientFormerV2
from backbones.export.prepare import ConvLayerNorm2d, MatmulLayerNorm, prepare_for_export
from backbones.edgevit import PatchSpread
from backbones.layers import LayerNorm2d, Linear2d, Subsample

from .conftest import TORCH_VERSION, randomise_bn_statistics

MODELS = [('edgevit_xxs', lambda: EdgeViT('xxs')),
          ('efficientformerv2_s0', lambda: EfficientFormerV2('s0', resolution=512))]


def _randomise_tables(model):
    """Random attention biases, layer scales, norm statistics and affines: every fold that
    prepare_for_export makes has something to get wrong."""
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith('attention_biases'):
                p.normal_()
            elif name.endswith('gamma'):
                p.uniform_(0.5, 1.5)
            elif p.dim() == 1 and ('norm' in name or '.bn.' in name):
                p.uniform_(0.5, 1.5) if name.endswith('weight') else p.normal_(0, 0.2)
    return randomise_bn_statistics(model).eval()


@pytest.mark.parametrize('name,build', MODELS)
def test_prepared_model_is_equal_and_exports_without_refused_ops(name, build):
    model = _randomise_tables(build())
    x = torch.randn(1, 3, 160, 224)
    deployed = prepare_for_export(model, (160, 224))
    assert not any(isinstance(m, (torch.nn.LayerNorm, Linear2d, Subsample, torch.nn.modules.dropout._DropoutNd))
                   for m in deployed.modules())
    assert any(isinstance(m, torch.nn.LayerNorm) for m in model.modules()) == (name == 'edgevit_xxs')
    with torch.no_grad():
        for a, b in zip(model(x), deployed(x)):
            torch.testing.assert_close(b, a, rtol=1e-5, atol=1e-5)
    graph = torch.export.export(deployed, (x,)).graph
    targets = {str(n.target) for n in graph.nodes if n.op == 'call_function'}
    # dropout: exported as a clone in eval mode, a full copy of the map in XNNPACK
    refused = {t for t in targets if any(bad in t for bad in ('layer_norm', 'aten.index.', 'upsample_bicubic',
                                                               'aten.expand', 'unbind', 'dropout', 'clone'))}
    # the op check is for the export IR of torch >= 2.6 (the [export] extra's 2.13); before it,
    # torch.export decomposes a reshape of a transposed map into clone + _unsafe_view and a
    # bilinear interpolation into index gathers
    op_check = TORCH_VERSION >= (2, 6)
    assert not (op_check and refused), refused
    other = torch.randn(1, 3, 192, 224)
    if name == 'edgevit_xxs':
        deployed(other)  # no size-bound state: any size still works
    else:
        with pytest.raises(ValueError, match='prepared for export'):
            deployed(other)  # biases were frozen for 160x224
    if not op_check and refused:
        pytest.skip(f'the delegate op check needs the export IR of torch >= 2.6; torch {torch.__version__}\'s '
                    f'has {sorted(refused)} (decomposed reshape / bilinear interpolation)')


def test_matmul_layer_norm_equals_layer_norm():
    norm = torch.nn.LayerNorm(48, eps=1e-6)
    with torch.no_grad():
        norm.weight.normal_()
        norm.bias.normal_()
    x = torch.randn(2, 7, 5, 48) * 3 + 1
    torch.testing.assert_close(MatmulLayerNorm(norm)(x), norm(x), rtol=1e-5, atol=1e-5)


def test_conv_layer_norm_2d_equals_layer_norm_over_channels():
    norm = LayerNorm2d(36)
    with torch.no_grad():
        norm.weight.normal_()
        norm.bias.normal_()
    x = torch.randn(2, 36, 9, 11) * 3 + 1
    expected = torch.nn.functional.layer_norm(x.permute(0, 2, 3, 1), (36,), norm.weight, norm.bias,
                                              norm.eps).permute(0, 3, 1, 2)
    torch.testing.assert_close(norm(x), expected)
    torch.testing.assert_close(ConvLayerNorm2d(norm)(x), expected, rtol=1e-5, atol=1e-5)


def test_channels_first_layers_equal_their_torch_counterparts():
    linear = Linear2d(12, 20)
    x = torch.randn(2, 12, 5, 7)
    tokens = linear(x).flatten(2).transpose(1, 2)
    expected = torch.nn.functional.linear(x.flatten(2).transpose(1, 2), linear.weight, linear.bias)
    torch.testing.assert_close(tokens, expected, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(linear.to_conv()(x), linear(x))
    sample = Subsample(12, 2)
    torch.testing.assert_close(sample(x), x[:, :, ::2, ::2])
    torch.testing.assert_close(sample.to_conv()(x), x[:, :, ::2, ::2])
    spread = PatchSpread(12, 4)
    with torch.no_grad():
        spread.weight.normal_()
        spread.bias.normal_()
    reference = torch.nn.functional.conv_transpose2d(x, spread.weight, spread.bias, stride=4, groups=12)
    torch.testing.assert_close(spread(x), reference, rtol=0, atol=1e-6)


def test_original_model_is_untouched():
    model = EfficientFormerV2('s0', resolution=224).eval()
    prepare_for_export(model, (224, 224))
    assert all(getattr(m, 'frozen_grids', None) is None for m in model.modules())
    model(torch.randn(1, 3, 96, 128))  # still any size
