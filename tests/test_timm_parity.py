"""Parity with timm's EfficientFormerV2 (an independent implementation) at 224.

A randomly initialised timm model, with every weight, BatchNorm statistic, layer scale and
attention bias drawn at random (so a misplaced term shows), is saved in timm's layout and
loaded through ``init_cfg``. Our stage features must equal timm's ``forward_intermediates``.
"""
import pytest
import timm
import torch

from backbones import EfficientFormerV2
from backbones.classifier import build_classifier

from .conftest import rel_err


@torch.no_grad()
def _randomised_timm(name):
    """timm's own weight init, plus random values for every term that starts as a constant
    (BatchNorm statistics and affine, layer scales, conv biases, attention-bias tables)."""
    model = timm.create_model(name, pretrained=False)
    for key, tensor in model.state_dict().items():
        if not tensor.is_floating_point():
            continue
        if key.endswith('running_var') or key.endswith(('bn.weight',)):
            tensor.uniform_(0.5, 1.5)
        elif key.endswith(('running_mean', 'bn.bias')):
            tensor.normal_(0, 0.1)
        elif key.endswith(('ls1.gamma', 'ls2.gamma')):
            tensor.uniform_(0.05, 0.3)
        elif key.endswith('attention_biases'):
            tensor.normal_(0, 1.0)
        elif key.endswith('.bias'):
            tensor.normal_(0, 0.05)
    return model.eval()


@pytest.mark.parametrize('arch', ['s0', 's1', pytest.param('s2', marks=pytest.mark.slow),
                                  pytest.param('l', marks=pytest.mark.slow)])
def test_stage_features_match_timm(arch, tmp_path):
    ref = _randomised_timm(f'efficientformerv2_{arch}')
    path = tmp_path / f'timm_{arch}.pth'
    torch.save(ref.state_dict(), path)
    model = EfficientFormerV2(arch, resolution=224, init_cfg=dict(type='Pretrained', checkpoint=str(path)))
    model.init_weights()
    model.eval()
    x = torch.randn(2, 3, 224, 224)
    with torch.no_grad():
        expected = ref.forward_intermediates(x, intermediates_only=True)
        ours = model(x)
        again = model(x)  # served from the eval-time bias cache
    assert len(ours) == len(expected) == 4
    for i, (a, b) in enumerate(zip(ours, expected)):
        assert a.shape == b.shape
        assert rel_err(a, b) < 1e-4, (arch, i, rel_err(a, b))
        assert torch.equal(a, again[i])
    if arch == 's0':
        classifier = build_classifier('efficientformerv2_s0')
        classifier.load_checkpoint(str(path))
        classifier.eval()
        with torch.no_grad():
            assert rel_err(classifier(x), ref(x)) < 1e-4


def test_official_classification_layout_runs_in_timm_and_ours(compact_reference):
    """The official classification file (compact reference), converted, runs in timm and in
    ours alike, and both give the official logits."""
    from timm.models.efficientformer_v2 import EfficientFormerV2 as TimmEfficientFormerV2
    from backbones.checkpoints.layouts import convert_state_dict
    from .test_reference_parity import TINY_EFFICIENTFORMERV2 as arch
    name = 'efficientformerv2_tiny_cls64.pt'
    ref = compact_reference(name)
    official = {k: v.float() if v.is_floating_point() else v for k, v in ref['state_dict'].items()}
    ours, layout = convert_state_dict(official)
    assert layout == 'efficientformerv2-official-classification'
    timm_model = TimmEfficientFormerV2(depths=arch['depths'], embed_dims=arch['widths'], mlp_ratios=arch['mlp_ratios'],
                                       num_vit=arch['num_vit'], img_size=64, num_classes=10).eval()
    timm_sd = {k.replace('bias.attention_biases', 'attention_biases'): v for k, v in ours.items()}
    missing, unexpected = timm_model.load_state_dict(timm_sd, strict=False)
    assert not unexpected and all(k.endswith('attention_bias_idxs') for k in missing)
    model = EfficientFormerV2(arch, resolution=64, init_cfg=dict(type='Pretrained', checkpoint=str(
        compact_reference.folder / name)))
    model.init_weights()
    model.eval()
    x = ref['cases'][0]['input'].float()
    with torch.no_grad():
        for a, b in zip(model(x), timm_model.forward_intermediates(x, intermediates_only=True)):
            assert rel_err(a, b) < 1e-4
        assert rel_err(timm_model(x), ref['cases'][0]['logits']) < 1e-4
