"""alibaba/EasyCV's EdgeViT checkpoints: the only published EdgeViT weights (EdgeViT-XXS).

EasyCV saves its ``Classification`` model (``easycv/models/classification/classification.py``)
through ``easycv/utils/checkpoint.py``: ``{'meta', 'state_dict', 'optimizer'}``, where the state
dict holds ``backbone.`` = ``EdgeVit`` (``easycv/models/backbones/edgevit.py``, the official
module names plus the final BatchNorm ``norm``) and ``head_0.fc_cls.`` (``ClsHead``'s linear).
The checkpoints here are made from our model by a hand-written mapping to those names.
"""
import re

import pytest
import torch
import torch.nn.functional as F

from backbones import EdgeViT
from backbones.checkpoints.layouts import convert_state_dict, detect_layout
from backbones.checkpoints.loading import convert_checkpoint_file, load_pretrained
from backbones.classifier import build_classifier
from backbones.edgevit import GlobalAttention

from .conftest import randomise_bn_statistics


def _to_easycv(ours: dict) -> dict:
    """Our classifier's keys -> EasyCV's, written from EasyCV's module names."""
    out = {}
    for key, value in ours.items():
        parts = key.split('.')
        if parts[0] == 'head':
            out['head_0.fc_cls.' + '.'.join(parts[1:])] = value
            continue
        if parts[0] == 'norm':
            out['backbone.' + key] = value
            continue
        assert parts[0] == 'backbone' and parts[1] == 'stages', key
        stage = int(parts[2]) + 1
        if parts[3] == 'downsample':  # PatchEmbed: proj, norm
            new = [f'patch_embed{stage}'] + parts[4:]
        else:  # blocks.j.{local_agg, global_attn}.rest
            assert parts[3] == 'blocks', key
            block, part, rest = parts[4], parts[5], parts[6:]
            if part == 'local_agg':  # LocalAgg: the depth-wise 5x5 conv is called attn
                part = 'LocalAgg'
                rest = ['attn' if r == 'dw_conv' else r for r in rest]
            else:  # SelfAttn: GlobalSparseAttn's transposed conv is LocalProp
                part = 'SelfAttn'
                rest = ['LocalProp' if r == 'local_prop' else r for r in rest]
            new = [f'blocks{stage}', block, part] + rest
        out['backbone.' + '.'.join(new)] = value
    return out


def _random_classifier(**kwargs):
    """EdgeViT-XXS classifier with every weight, norm affine and BatchNorm statistic random."""
    model = build_classifier('edgevit_xxs', **kwargs)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if p.dim() == 1:  # norm affines and biases (conv and linear weights keep their init)
                p.uniform_(0.5, 1.5) if name.endswith('weight') else p.normal_(0, 0.1)
    return randomise_bn_statistics(model).eval()


@pytest.fixture(scope='module')
def easycv_checkpoint(tmp_path_factory):
    torch.manual_seed(0)
    source = _random_classifier(layer_norm_eps=1e-8)
    state_dict = _to_easycv(source.state_dict())
    # names read from EasyCV's code, so the mapping above cannot drift from it unnoticed
    for name in ('backbone.patch_embed1.proj.weight', 'backbone.patch_embed4.norm.bias',
                 'backbone.blocks1.0.LocalAgg.attn.weight', 'backbone.blocks1.0.LocalAgg.mlp.fc2.bias',
                 'backbone.blocks3.2.SelfAttn.attn.LocalProp.weight', 'backbone.blocks3.2.SelfAttn.attn.norm.weight',
                 'backbone.blocks4.1.SelfAttn.attn.qkv.weight', 'backbone.blocks4.1.SelfAttn.norm2.weight',
                 'backbone.norm.running_var', 'head_0.fc_cls.weight'):
        assert name in state_dict, name
    assert not any(re.search(r'stages|local_agg|global_attn|dw_conv|local_prop', k) for k in state_dict)
    path = tmp_path_factory.mktemp('easycv') / 'ClsEvaluator_neck_top1_best.pth'
    torch.save({'meta': {'epoch': 299, 'iter': 750600, 'neck_top1': 75.18}, 'state_dict': state_dict,
                'optimizer': {'state': {}, 'param_groups': []}}, path)
    return source, state_dict, str(path)


def test_easycv_layout_is_detected_and_converted_purely_and_idempotently(easycv_checkpoint):
    source, state_dict, _ = easycv_checkpoint
    assert detect_layout(state_dict) == 'edgevit-easycv'
    before = dict(state_dict)
    converted, layout = convert_state_dict(state_dict)
    assert layout == 'edgevit-easycv' and state_dict == before
    expected = {(k[len('backbone.'):] if k.startswith('backbone.') else k): v for k, v in source.state_dict().items()}
    assert converted.keys() == expected.keys()
    assert all(torch.equal(converted[k], expected[k]) for k in expected)
    assert convert_state_dict(converted)[0] == converted


def test_easycv_checkpoint_loads_into_the_backbone_through_init_cfg(easycv_checkpoint):
    source, _, path = easycv_checkpoint
    report = load_pretrained(EdgeViT('xxs', layer_norm_eps=1e-8), path)
    assert report['missing'] == [] and report['unexpected'] == []
    assert sorted(report['ignored']) == ['head.bias', 'head.weight', 'norm.bias', 'norm.num_batches_tracked',
                                        'norm.running_mean', 'norm.running_var', 'norm.weight']
    model = EdgeViT('xxs', layer_norm_eps=1e-8, init_cfg=dict(type='Pretrained', checkpoint=path))
    model.init_weights()
    model.eval()
    x = torch.randn(2, 3, 224, 224)
    reference = EdgeViT('xxs', layer_norm_eps=1e-8).eval()  # all four stages of the source's backbone
    reference.load_state_dict(source.backbone.state_dict(), strict=True)
    with torch.no_grad():
        for a, b in zip(model(x), reference(x)):
            torch.testing.assert_close(a, b, rtol=0, atol=0)


def test_easycv_classifier_loads_with_its_head(easycv_checkpoint, tmp_path):
    source, _, path = easycv_checkpoint
    classifier = build_classifier('edgevit_xxs', layer_norm_eps=1e-8).eval()
    classifier.load_checkpoint(path)  # strict: every tensor has its place
    x = torch.randn(2, 3, 224, 224)
    with torch.no_grad():
        torch.testing.assert_close(classifier(x), source(x), rtol=0, atol=0)
    # the offline converter writes it as one classifier, not as a detector with a stray head
    out = tmp_path / 'edgevit_xxs_edgeformers.pth'
    info = convert_checkpoint_file(path, str(out))
    assert info['layout'] == 'edgevit-easycv' and (info['family'], info['arch']) == ('EdgeViT', 'xxs')
    again = build_classifier('edgevit_xxs', layer_norm_eps=1e-8).eval()
    again.load_checkpoint(str(out))
    with torch.no_grad():
        torch.testing.assert_close(again(x), source(x), rtol=0, atol=0)


def test_layer_norm_eps_sets_the_block_norms_only():
    """EasyCV builds SelfAttn's norm1/norm2 with ``partial(nn.LayerNorm, eps=1e-8)``; the patch
    embeddings' and the sparse attention's own LayerNorm keep nn.LayerNorm's 1e-5 (as official)."""
    official, easycv = EdgeViT('xxs'), EdgeViT('xxs', layer_norm_eps=1e-8)
    for model, eps in ((official, 1e-6), (easycv, 1e-8)):
        blocks = [m for m in model.modules() if isinstance(m, GlobalAttention)]
        assert len(blocks) == sum(EdgeViT.arch_settings['xxs']['depths'])
        assert all(b.norm1.eps == b.norm2.eps == eps for b in blocks)
        assert all(s.downsample.norm.eps == 1e-5 for s in model.stages)
        assert all(b.attn.norm.eps == 1e-5 for b in blocks if b.attn.sr_ratio > 1)
    norm = easycv.stages[2].blocks[0].global_attn.norm1
    x = torch.randn(2, 144, 5, 7) * 1e-3  # small variance, where eps shows
    expected = F.layer_norm(x.permute(0, 2, 3, 1), (144,), norm.weight, norm.bias, 1e-8).permute(0, 3, 1, 2)
    torch.testing.assert_close(norm(x), expected)
