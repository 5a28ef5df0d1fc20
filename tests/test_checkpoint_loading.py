"""backbones.checkpoints.layouts and .loading: layouts detected and converted purely; loading
refuses a checkpoint of another arch or model (naming the arch it fits) unless a partial load
is asked for; EMA weights are preferred and named; tools/test.py and tools/export.py are
strict."""
import os

import pytest
import torch

from backbones import EdgeViT, EfficientFormerV2
from backbones.checkpoints.io import CheckpointFileError
from backbones.checkpoints.layouts import LAYOUTS, convert_full_checkpoint, convert_state_dict, detect_layout
from backbones.checkpoints.loading import (CheckpointMismatchError, extract_state_dict, find_state_dict, guess_arch,
                                           load_model_checkpoint, load_pretrained)

from .conftest import load_tool


def convert_efficientformerv2_official(sd):
    return LAYOUTS['efficientformerv2-official-dense' if any(k.endswith('_seg') for k in sd)
                   else 'efficientformerv2-official-classification'].convert(sd)


def convert_efficientformerv2_timm(sd):
    return LAYOUTS['efficientformerv2'].convert(sd)


def convert_edgevit_official(sd):
    return LAYOUTS['edgevit-official'].convert(sd)


def _float(sd):
    return {k: v.float() if v.is_floating_point() else v for k, v in sd.items()}


TINY_EDGEVIT = dict(depths=(1, 1, 2, 1), widths=(16, 32, 64, 96), head_dim=16, mlp_ratio=4.,
                    sr_ratios=(4, 2, 2, 1), qkv_bias=True)
TINY_EFFICIENTFORMERV2 = dict(depths=(1, 1, 2, 2), widths=(16, 24, 32, 48), num_vit=1, drop_path_rate=0.0,
                              mlp_ratios=((4,), (4,), (4, 3), (4, 3)))
# (file, True for the compact references shipped in tests/data, detected layout, class, kwargs)
CASES = [('edgevit_tiny.pt', True, 'edgevit-official', EdgeViT, dict(arch=TINY_EDGEVIT)),
         ('efficientformerv2_tiny_cls64.pt', True, 'efficientformerv2-official-classification', EfficientFormerV2,
          dict(arch=TINY_EFFICIENTFORMERV2, resolution=64)),
         ('efficientformerv2_tiny_dense128.pt', True, 'efficientformerv2-official-dense', EfficientFormerV2,
          dict(arch=TINY_EFFICIENTFORMERV2, resolution=128)),
         ('edgevit_xxs.pt', False, 'edgevit-official', EdgeViT, dict(arch='xxs')),
         ('edgevit_xs.pt', False, 'edgevit-official', EdgeViT, dict(arch='xs')),
         ('efficientformerv2_s0_cls_biased.pt', False, 'efficientformerv2-official-classification',
          EfficientFormerV2, dict(arch='s0')),
         ('efficientformerv2_s0_dense512_biased.pt', False, 'efficientformerv2-official-dense', EfficientFormerV2,
          dict(arch='s0', resolution=512))]


@pytest.mark.parametrize('name,compact,layout,cls,kwargs', CASES, ids=[c[0] for c in CASES])
def test_conversion_is_pure_idempotent_and_complete(request, name, compact, layout, cls, kwargs):
    source = request.getfixturevalue('compact_reference' if compact else 'reference')
    official = _float(source(name)['state_dict'])
    snapshot = dict(official)
    converted, detected = convert_state_dict(official)
    assert detected == layout
    assert official == snapshot  # input untouched
    again, layout_again = convert_state_dict(converted)
    assert layout_again in ('edgevit', 'efficientformerv2', 'efficientformerv2-classification')
    assert again.keys() == converted.keys() and all(again[k] is converted[k] for k in again)
    model = cls(**kwargs)
    backbone = {k: v for k, v in converted.items() if not k.startswith(('head', 'norm.'))}
    result = model.load_state_dict(backbone, strict=True)  # every key accounted for
    assert not result.missing_keys and not result.unexpected_keys


def test_index_buffers_are_optional(reference):
    official = _float(reference('efficientformerv2_s0_dense512_biased.pt')['state_dict'])
    without = {k: v for k, v in official.items() if 'attention_bias_idxs' not in k}
    a = convert_efficientformerv2_official(official)
    b = convert_efficientformerv2_official(without)
    assert a.keys() == b.keys()
    # the dense model's unused 224 tables are not mistaken for its real tables
    key = 'stages.2.blocks.5.token_mixer.bias.attention_biases'
    assert torch.equal(a[key], official['network.4.5.token_mixer.attention_biases_seg'])


def test_timm_layout_detected_and_idempotent():
    import timm
    sd = timm.create_model('efficientformerv2_s0', pretrained=False).state_dict()
    assert detect_layout(sd) == 'efficientformerv2-classification'
    ours = convert_efficientformerv2_timm(sd)
    assert convert_efficientformerv2_timm(ours) == ours
    assert convert_edgevit_official(ours) == ours


@pytest.mark.parametrize('wrapper', ['state_dict', 'model', None])
def test_wrappers_prefix_and_ddp(compact_reference, tmp_path, wrapper):
    sd = _float(compact_reference('edgevit_tiny.pt')['state_dict'])
    full = {'backbone.' + k: v for k, v in sd.items()}
    full['neck.conv.weight'] = torch.zeros(1)
    full = {'module.' + k: v for k, v in full.items()}
    ckpt = {wrapper: full, 'meta': {'epoch': 3}} if wrapper else full
    path = tmp_path / 'det.pth'
    torch.save(ckpt, path)
    model = EdgeViT(TINY_EDGEVIT, init_cfg=dict(type='Pretrained', checkpoint=str(path), prefix='backbone.'))
    model.init_weights()
    assert torch.equal(model.stages[0].downsample.proj.weight, sd['patch_embed1.proj.weight'])
    # without a prefix the backbone part of a whole-model checkpoint is found too
    model = EdgeViT(TINY_EDGEVIT, init_cfg=dict(type='Pretrained', checkpoint=str(path)))
    model.init_weights()
    assert torch.equal(model.stages[2].blocks[1].global_attn.attn.qkv.weight,
                       sd['blocks3.1.SelfAttn.attn.qkv.weight'])
    with pytest.raises(ValueError, match='prefix'):
        extract_state_dict(ckpt, prefix='detector.')


def test_wrong_arch_is_refused_and_named(reference, tmp_path):
    path = reference.folder / 'edgevit_xs.pt'
    with pytest.raises(ValueError, match=r"EdgeViT\(arch='xs'\)"):
        load_pretrained(EdgeViT('xxs'), str(path))
    with pytest.raises(ValueError, match=r"EdgeViT\(arch='xs'\)"):
        load_pretrained(EfficientFormerV2('s0'), str(path))
    with pytest.raises(ValueError, match=r"EfficientFormerV2\(arch='s0'\)"):
        load_pretrained(EfficientFormerV2('s1'), str(reference.folder / 'efficientformerv2_s0_cls_biased.pt'))
    family, arch, score = guess_arch(convert_state_dict(_float(reference('edgevit_xxs.pt')['state_dict']))[0])
    assert (family, arch) == ('EdgeViT', 'xxs') and score > 0.9
    # mostly unmatched
    torch.save({'foo.weight': torch.zeros(3)}, tmp_path / 'junk.pth')
    with pytest.raises(ValueError, match='only 0%'):
        load_pretrained(EdgeViT('xxs'), str(tmp_path / 'junk.pth'))
    with pytest.raises(FileNotFoundError, match='does not exist'):
        load_pretrained(EdgeViT('xxs'), str(tmp_path / 'missing.pth'))


def test_partial_checkpoint_loads_and_reports(compact_reference, tmp_path, caplog):
    sd = _float(compact_reference('edgevit_tiny.pt')['state_dict'])
    partial = {k: v for k, v in sd.items() if not k.startswith('blocks3.1.')}
    partial['extra.weight'] = torch.zeros(2)
    torch.save(partial, tmp_path / 'partial.pth')
    with pytest.raises(ValueError, match=r'stage 2: .*\(missing: 1\).*partial=True'):  # refused unless asked for
        load_pretrained(EdgeViT(TINY_EDGEVIT), str(tmp_path / 'partial.pth'))
    report = load_pretrained(EdgeViT(TINY_EDGEVIT), str(tmp_path / 'partial.pth'), partial=True)
    assert report['unexpected'] == ['extra.weight']
    assert any(k.startswith('stages.2.blocks.1.') for k in report['missing'])
    assert 'head.weight' in report['ignored']


def test_classification_biases_in_dense_models(reference):
    """224 ImageNet tables: zero in 'official' mode (as the official recipe), resized in 'table'."""
    path = str(reference.folder / 'efficientformerv2_s0_cls_biased.pt')
    official = _float(reference('efficientformerv2_s0_cls_biased.pt')['state_dict'])
    dense = EfficientFormerV2('s0', resolution=512, bias_mode='official')
    load_pretrained(dense, path)
    table = dense.stages[3].blocks[3].token_mixer.bias.attention_biases
    assert table.shape == (8, 256) and not table.any()
    assert torch.equal(dense.stages[3].blocks[3].mlp.fc1.conv.weight, official['network.6.3.mlp.fc1.weight'])
    resized = EfficientFormerV2('s0', resolution=512, bias_mode='table')
    load_pretrained(resized, path)
    module = resized.stages[3].blocks[3].token_mixer.bias
    src = official['network.6.3.token_mixer.attention_biases']
    assert module.attention_biases.shape == (8, 256)
    assert torch.equal(module.attention_biases.detach(), module.resize_table(src))
    constant = module.resize_table(torch.full((8, 49), 0.5))
    torch.testing.assert_close(constant, torch.full((8, 256), 0.5))
    # a dense checkpoint made for another resolution is refused in 'official' mode
    dense_path = str(reference.folder / 'efficientformerv2_s0_dense512_biased.pt')
    with pytest.raises(ValueError, match="resolution"):
        load_pretrained(EfficientFormerV2('s0', resolution=800), dense_path)
    load_pretrained(EfficientFormerV2('s0', resolution=800, bias_mode='table'), dense_path)


def test_convert_full_detector_checkpoint(reference):
    official = _float(reference('efficientformerv2_s0_dense512_biased.pt')['state_dict'])
    full = {'backbone.' + k: v for k, v in official.items()}
    full['neck.lateral_convs.0.conv.weight'] = torch.ones(1)
    converted = convert_full_checkpoint(full)
    assert converted['neck.lateral_convs.0.conv.weight'] is full['neck.lateral_convs.0.conv.weight']
    assert 'backbone.stem.conv1.conv.weight' in converted
    assert convert_full_checkpoint(converted).keys() == converted.keys()


@pytest.mark.slow
def test_convert_tool(reference, tmp_path):
    import subprocess
    import sys
    from .conftest import ROOT
    src = reference.folder / 'efficientformerv2_s0_dense512_biased.pt'
    dst = tmp_path / 'out' / 's0.pth'
    run = subprocess.run([sys.executable, str(ROOT / 'tools' / 'convert_checkpoint.py'), str(src), str(dst)],
                         capture_output=True, text=True, check=True)
    assert "EfficientFormerV2(arch='s0')" in run.stdout
    sd = torch.load(dst, weights_only=True)['state_dict']
    assert detect_layout(sd) == 'efficientformerv2'
    again = subprocess.run([sys.executable, str(ROOT / 'tools' / 'convert_checkpoint.py'), str(src), str(dst)],
                           capture_output=True, text=True)
    assert again.returncode != 0 and '--force' in again.stderr



@pytest.mark.parametrize('link', ['symlink', 'hardlink'])
def test_convert_refuses_dst_that_is_src(link, tmp_path, capsys):
    from .conftest import COMPACT_REFERENCE
    src = tmp_path / 'src.pt'
    src.write_bytes((COMPACT_REFERENCE / 'edgevit_tiny.pt').read_bytes())
    dst = tmp_path / 'dst.pt'
    (os.symlink if link == 'symlink' else os.link)(src, dst)
    with pytest.raises(SystemExit):
        load_tool('convert_checkpoint').main([str(src), str(dst), '--force'])
    assert 'same file' in capsys.readouterr().err
    assert src.read_bytes() == (COMPACT_REFERENCE / 'edgevit_tiny.pt').read_bytes()


# ---------------------------------------------------------------------------- wrong weights are refused
@pytest.mark.parametrize('weights,model', [('xs', 's'), ('s', 'xs')])
def test_other_depth_refused_naming_the_arch(weights, model, tmp_path):
    path = tmp_path / f'{weights}.pth'
    torch.save(EdgeViT(weights).state_dict(), path)
    kind = 'missing' if weights == 'xs' else 'unexpected'
    with pytest.raises(CheckpointMismatchError, match=rf"stage 2: .*\({kind}: 3, 4\).*EdgeViT\(arch='{weights}'\)"):
        load_pretrained(EdgeViT(model), str(path))
    # asked for explicitly, a partial load goes ahead and lists what was not loaded
    report = load_pretrained(EdgeViT(model), str(path), partial=True)
    assert (report['missing'] if kind == 'missing' else report['unexpected'])
    assert any(k.startswith('stages.2.blocks.3.') for k in report['missing'] + report['unexpected'])


def test_ema_weights_preferred_and_named(compact_reference, tmp_path):
    raw = _float(compact_reference('edgevit_tiny.pt')['state_dict'])
    ema = {k: v + 1 if v.is_floating_point() else v for k, v in raw.items()}
    key = 'patch_embed1.proj.weight'
    for wrapper in ({'model': raw, 'model_ema': ema}, {'state_dict': raw, 'state_dict_ema': ema},
                    {'state_dict': raw, 'ema_state_dict': ema}):
        sd, where = find_state_dict(wrapper)
        assert sd is ema and 'EMA' in where
    # mmengine's EMAHook: 'state_dict' already holds the EMA weights, 'ema_state_dict' the raw ones
    mmengine_ema = {'state_dict': ema, 'ema_state_dict': {'steps': torch.tensor(5),
                                                          **{'module.' + k: v for k, v in raw.items()}}}
    sd, where = find_state_dict(mmengine_ema)
    assert sd is ema and 'EMAHook' in where
    torch.save({'model': raw, 'model_ema': ema}, tmp_path / 'ema.pth')
    model = EdgeViT(TINY_EDGEVIT)
    load_pretrained(model, str(tmp_path / 'ema.pth'))
    assert torch.equal(model.stages[0].downsample.proj.weight, ema[key])


def test_tools_test_is_strict_with_a_partial_option(tiny_retinanet, tmp_path, capsys):
    config, state = tiny_retinanet
    other = {k: v for k, v in state.items() if not k.startswith('bbox_head.')}
    other['roi_head.bbox_head.fc_cls.weight'] = torch.zeros(3, 3)
    torch.save({'state_dict': other}, tmp_path / 'other.pth')
    main = load_tool('test').main
    assert main([config, str(tmp_path / 'other.pth'), '--work-dir', str(tmp_path / 'w')]) == 2
    err = capsys.readouterr().err
    assert 'bbox_head' in err and 'roi_head' in err and '--partial' in err
    assert main([config, str(tmp_path / 'other.pth'), '--work-dir', str(tmp_path / 'w'), '--partial']) == 0
    # a checkpoint whose backbone is another arch is refused, naming it
    xs = {k: v for k, v in state.items() if not k.startswith('backbone.')}
    xs.update({'backbone.' + k: v for k, v in EdgeViT('xs').state_dict().items()})
    torch.save(xs, tmp_path / 'xs.pth')
    assert main([config, str(tmp_path / 'xs.pth'), '--work-dir', str(tmp_path / 'w')]) == 2
    assert "EdgeViT(arch='xs')" in capsys.readouterr().err


def test_export_checkpoint_is_strict_with_a_partial_option(tiny_retinanet, tmp_path, capsys):
    from backbones.export.targets import build_target
    from backbones.runtime.models import build_model_from_config
    config, state = tiny_retinanet
    partial = {k: v for k, v in state.items() if not k.startswith('neck.')}
    torch.save(partial, tmp_path / 'partial.pth')
    assert load_tool('export').main([config, '--size', '64', '64', '--checkpoint', str(tmp_path / 'partial.pth'),
                            '--formats', 'onnx', '--out-dir', str(tmp_path)]) == 2
    assert 'neck' in capsys.readouterr().err and not list(tmp_path.glob('*.onnx'))
    target = build_target(config, (64, 64), str(tmp_path / 'partial.pth'), partial=True)
    loaded = target.full_model.state_dict()
    assert torch.equal(loaded['bbox_head.retina_cls.weight'], state['bbox_head.retina_cls.weight'])
    # whole checkpoints of this model load strictly; a backbone checkpoint by variant name too
    torch.save({'state_dict': state}, tmp_path / 'full.pth')
    assert load_model_checkpoint(build_model_from_config(config)[0], str(tmp_path / 'full.pth')) == dict(
        missing=[], unexpected=[], mismatched=[])
    torch.save(EdgeViT('xs').state_dict(), tmp_path / 'xs.pth')
    with pytest.raises(CheckpointMismatchError, match=r"EdgeViT\(arch='xs'\)"):
        build_target('edgevit_xxs', (64, 64), str(tmp_path / 'xs.pth'))


# ---------------------------------------------------------------------------- values no model should be given
def test_nonfinite_and_integer_weights_are_refused_naming_them(tmp_path):
    state = EdgeViT('xxs').state_dict()
    poisoned = dict(state)
    poisoned['stages.0.downsample.proj.weight'] = state['stages.0.downsample.proj.weight'].clone().fill_(float('nan'))
    poisoned['stages.3.blocks.1.global_attn.mlp.fc2.bias'] = torch.full_like(
        state['stages.3.blocks.1.global_attn.mlp.fc2.bias'], float('inf'))
    torch.save(poisoned, tmp_path / 'nan.pth')
    with pytest.raises(CheckpointFileError) as err:
        EdgeViT('xxs', init_cfg=dict(type='Pretrained', checkpoint=str(tmp_path / 'nan.pth'))).init_weights()
    message = str(err.value)
    assert '2 of its' in message and 'NaN or infinite' in message and 'stages.0.downsample.proj.weight' in message
    integers = {k: v.round().to(torch.int32) if v.is_floating_point() else v for k, v in state.items()}
    torch.save(integers, tmp_path / 'int.pth')
    with pytest.raises(CheckpointFileError, match='weights are integers where the model has floating-point'):
        EdgeViT('xxs', init_cfg=dict(type='Pretrained', checkpoint=str(tmp_path / 'int.pth'))).init_weights()


def test_whole_model_loading_refuses_nonfinite_weights(tiny_retinanet, tmp_path, capsys):
    config, state = tiny_retinanet
    poisoned = dict(state)
    key = next(k for k in state if k.startswith('bbox_head.') and k.endswith('weight'))
    poisoned[key] = torch.full_like(state[key], float('nan'))
    torch.save({'state_dict': poisoned}, tmp_path / 'diverged.pth')
    assert load_tool('test').main([config, str(tmp_path / 'diverged.pth'), '--work-dir', str(tmp_path / 'w')]) == 2
    err = capsys.readouterr().err
    assert 'NaN or infinite' in err and key in err and 'Traceback' not in err


# ---------------------------------------------------------------------------- mmpretrain classifiers
@pytest.mark.parametrize('name', ['edgevit_xxs', 'efficientformerv2_s0'])
def test_an_mmpretrain_classifier_checkpoint_initialises_the_downstream_backbone(name, tmp_path):
    """A classifier trained with configs/classification/ (mmpretrain keys: backbone.*, head.norm.*,
    head.head.*, head.head_dist.*), given as init_cfg, loads every backbone weight; converted
    with --backbone-only it is the backbone's state dict."""
    from backbones.checkpoints.layouts import mmpretrain_keys
    from backbones.classifier import build_classifier
    from backbones.registry import get_variant
    classifier = build_classifier(name, num_classes=5)
    ours = {k[len('backbone.'):] if k.startswith('backbone.') else k: v for k, v in classifier.state_dict().items()}
    checkpoint = {'meta': {'epoch': 300}, 'state_dict': mmpretrain_keys(ours)}
    assert any(k.startswith('head.head.') for k in checkpoint['state_dict'])
    torch.save(checkpoint, tmp_path / 'cls.pth')
    assert detect_layout(checkpoint['state_dict']) == name.split('_')[0] + '-mmpretrain'
    variant = get_variant(name)
    dense = variant.cls(arch=variant.arch, **variant.cls.size_kwargs((512, 512)),
                        init_cfg=dict(type='Pretrained', checkpoint=str(tmp_path / 'cls.pth')))
    report = load_pretrained(dense, str(tmp_path / 'cls.pth'))
    assert report['missing'] == [] and report['unexpected'] == []
    assert set(report['ignored']) == {k for k in classifier.state_dict() if k.startswith(('norm.', 'head'))}
    for key, value in classifier.backbone.state_dict().items():
        if not key.endswith('attention_biases'):  # 224-grid tables start at zero in the dense model
            assert torch.equal(dense.state_dict()[key], value), key
    main = load_tool('convert_checkpoint').main
    assert main([str(tmp_path / 'cls.pth'), str(tmp_path / 'backbone.pth'), '--backbone-only']) == 0
    backbone = torch.load(tmp_path / 'backbone.pth', weights_only=True)['state_dict']
    assert backbone.keys() == classifier.backbone.state_dict().keys()


def test_pretrained_without_a_checkpoint_trains_from_scratch(caplog):
    """The configs' default, init_cfg=dict(type='Pretrained', checkpoint=None): a warning, and
    the weights keep their initialisation."""
    model = EdgeViT('xxs', init_cfg=dict(type='Pretrained', checkpoint=None))
    before = {k: v.clone() for k, v in model.state_dict().items()}
    model.init_weights()
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
