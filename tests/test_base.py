"""The OpenMMLab backbone contract, at odd and non-square sizes."""
import math

import pytest
import torch
import torch.nn as nn

from backbones import EdgeViT, EfficientFormerV2
from backbones.registry import FAMILIES as REGISTERED, variants


def _smallest(cls, size):
    """The family's first variant, with the arguments an input of ``size`` needs."""
    return dict(arch=next(iter(cls.arch_settings)), **cls.size_kwargs((size, size)))


#: one variant of each registered family (name, class, arguments), and every variant
SMALL = [(name, cls, _smallest(cls, 512)) for name, cls in REGISTERED.items()]
ALL = [(v.cls, dict(arch=v.arch)) for v in variants()]
#: the same, for inputs of 64x64
FAMILIES = [(cls, _smallest(cls, 64)) for cls in REGISTERED.values()]


def _expected(h, w, channels):
    return [(c, math.ceil(h / s), math.ceil(w / s)) for c, s in zip(channels, (4, 8, 16, 32))]


@pytest.mark.parametrize('cls,kwargs', ALL, ids=lambda v: v.get('arch') if isinstance(v, dict) else v.__name__)
def test_every_variant_odd_size_train_and_eval(cls, kwargs):
    model = cls(**kwargs)
    x = torch.randn(2, 3, 33, 47)
    model.train()
    outs = model(x)
    assert [tuple(o.shape[1:]) for o in outs] == _expected(33, 47, model.stage_channels)
    sum(o.mean() for o in outs).backward()
    model.eval()
    with torch.no_grad():
        outs = model(x[:1])
    assert [tuple(o.shape[1:]) for o in outs] == _expected(33, 47, model.stage_channels)
    assert all(o.is_contiguous() and torch.isfinite(o).all() for o in outs)


@pytest.mark.parametrize('name,cls,kwargs', SMALL)
@pytest.mark.parametrize('size', [(32, 32), (97, 131), (224, 320), (131, 97), (64, 200)])
def test_output_sizes(name, cls, kwargs, size):
    model = cls(**kwargs).eval()
    with torch.no_grad():
        outs = model(torch.randn(1, 3, *size))
    assert [tuple(o.shape[1:]) for o in outs] == _expected(*size, model.stage_channels)
    assert model.out_channels == model.stage_channels


@pytest.mark.parametrize('name,cls,kwargs', SMALL)
def test_batch_items_are_independent(name, cls, kwargs):
    model = cls(**kwargs).eval()
    x = torch.randn(3, 3, 65, 97)
    with torch.no_grad():
        batched = model(x)
        single = model(x[1:2])
    for a, b in zip(batched, single):
        torch.testing.assert_close(a[1:2], b, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize('name,cls,kwargs', SMALL)
def test_out_indices(name, cls, kwargs):
    model = cls(out_indices=(1, -1), **kwargs).eval()
    outs = model(torch.randn(1, 3, 64, 64))
    assert [o.shape[1] for o in outs] == [model.stage_channels[1], model.stage_channels[3]]
    assert model.out_channels == (model.stage_channels[1], model.stage_channels[3])
    with pytest.raises(ValueError, match='out of range'):
        cls(out_indices=(4,), **kwargs)


@pytest.mark.parametrize('name,cls,kwargs', SMALL)
def test_frozen_stages(name, cls, kwargs):
    model = cls(frozen_stages=2, **kwargs)
    model.train()
    frozen = [model.stem, model.stages[0], model.stages[1]]
    if name == 'EdgeViT':
        frozen[0] = model.stages[0].downsample
    for m in frozen:
        assert all(not p.requires_grad for p in m.parameters())
        assert all(not sub.training for sub in m.modules())
    for m in model.stages[2:]:
        assert all(p.requires_grad for p in m.parameters())
        assert all(sub.training for sub in m.modules())
    # re-applied after .train(): frozen statistics do not move
    bn = next(m for m in model.stages[1].modules() if isinstance(m, nn.BatchNorm2d))
    before = bn.running_mean.clone()
    model.train()
    model(torch.randn(2, 3, 64, 64))
    assert torch.equal(before, bn.running_mean)
    assert cls(frozen_stages=0, **kwargs)._frozen_modules()
    with pytest.raises(ValueError, match='frozen_stages'):
        cls(frozen_stages=5, **kwargs)


@pytest.mark.parametrize('name,cls,kwargs', SMALL)
def test_norm_eval(name, cls, kwargs):
    model = cls(norm_eval=True, **kwargs)
    model.train()
    bns = [m for m in model.modules() if isinstance(m, nn.BatchNorm2d)]
    assert bns and all(not m.training for m in bns)
    stats = [m.running_mean.clone() for m in bns]
    model(torch.randn(2, 3, 64, 64))
    assert all(torch.equal(a, m.running_mean) for a, m in zip(stats, bns))
    assert any(m.training for m in model.modules() if not isinstance(m, nn.BatchNorm2d))


@pytest.mark.parametrize('name,cls,kwargs', SMALL)
def test_with_cp_equals_plain_forward(name, cls, kwargs):
    torch.manual_seed(1)
    plain = cls(**kwargs)
    ckpt = cls(with_cp=True, **kwargs)
    ckpt.load_state_dict(plain.state_dict())
    plain.train()
    ckpt.train()
    x = torch.randn(2, 3, 65, 66)
    out_a = plain(x)
    out_b = ckpt(x)
    for a, b in zip(out_a, out_b):
        torch.testing.assert_close(a, b)
    sum(o.square().mean() for o in out_a).backward()
    sum(o.square().mean() for o in out_b).backward()
    for (n, p), q in zip(plain.named_parameters(), ckpt.parameters()):
        if p.grad is not None:
            torch.testing.assert_close(p.grad, q.grad, rtol=1e-4, atol=1e-6, msg=n)


@pytest.mark.parametrize('name,cls,kwargs', SMALL)
def test_save_load_round_trip_strict(name, cls, kwargs, tmp_path):
    a = cls(**kwargs).eval()
    with torch.no_grad():
        for p in a.parameters():
            p.add_(torch.randn_like(p) * 0.01)
    path = tmp_path / 'model.pth'
    torch.save(a.state_dict(), path)
    b = cls(**kwargs)
    b.load_state_dict(torch.load(path, weights_only=True), strict=True)
    b.eval()
    x = torch.randn(1, 3, 70, 90)
    with torch.no_grad():
        for u, v in zip(a(x), b(x)):
            assert torch.equal(u, v)
    # and through init_cfg, which checks the layout
    c = cls(init_cfg=dict(type='Pretrained', checkpoint=str(path)), **kwargs)
    c.init_weights()
    for (k, u), v in zip(a.state_dict().items(), c.state_dict().values()):
        assert torch.equal(u, v), k


@pytest.mark.parametrize('name,cls,kwargs', SMALL)
def test_bad_inputs_raise_clear_errors(name, cls, kwargs):
    model = cls(**kwargs).eval()
    with pytest.raises(ValueError, match='3 input channels'):
        model(torch.randn(1, 1, 64, 64))
    with pytest.raises(ValueError, match='at least 32x32'):
        model(torch.randn(1, 3, 31, 64))
    with pytest.raises(ValueError, match='4-D'):
        model(torch.randn(3, 64, 64))
    with pytest.raises(ValueError, match='unknown arch'):
        cls(arch='huge')
    with pytest.raises(ValueError, match='custom arch dict needs'):
        cls(arch=dict(depths=(1, 1, 1, 1)))


def test_custom_arch_dict():
    arch = dict(EdgeViT.arch_settings['xxs'], depths=(1, 1, 1, 1))
    model = EdgeViT(arch=arch).eval()
    assert len(model.stages[2].blocks) == 1 and model.arch_name == 'custom'
    ef = dict(EfficientFormerV2.arch_settings['s0'], depths=(1, 1, 2, 2),
              mlp_ratios=((4,), (4,), (4, 4), (4, 4)))
    model = EfficientFormerV2(arch=ef).eval()
    assert len(model.stages[3].blocks) == 2
    with pytest.raises(ValueError, match='one ratio per block'):
        EfficientFormerV2(arch=dict(ef, depths=(1, 1, 3, 2)))


def test_efficientformer_argument_errors():
    with pytest.raises(ValueError, match='bias_mode'):
        EfficientFormerV2(bias_mode='bilinear')
    with pytest.raises(ValueError, match='resolution'):
        EfficientFormerV2(resolution=8)


def test_drop_path_defaults_follow_the_official_code():
    model = EfficientFormerV2('l')
    last = model.stages[-1].blocks[-1].drop_path
    assert last.drop_prob == pytest.approx(0.1)
    assert isinstance(EfficientFormerV2('s0').stages[-1].blocks[-1].drop_path, nn.Identity)
    model = EdgeViT('xxs', drop_path_rate=0.1)
    assert model.stages[-1].blocks[-1].global_attn.drop_path.drop_prob == pytest.approx(0.1)


def test_registered_in_mmdet_and_mmseg():
    import backbones  # noqa: F401
    from mmdet.registry import MODELS as DET
    from mmseg.registry import MODELS as SEG
    for registry in (DET, SEG):
        assert registry.get('EdgeViT') is EdgeViT
        assert registry.get('EfficientFormerV2') is EfficientFormerV2
    model = DET.build(dict(type='EfficientFormerV2', arch='s1', out_indices=(1, 2, 3)))
    assert model.out_channels == (48, 120, 224)
    model = SEG.build(dict(type='EdgeViT', arch='xs'))
    assert model.out_channels == (48, 96, 240, 384)



# ---------------------------------------------------------------- backbones
@pytest.mark.parametrize('cls,kwargs', FAMILIES)
def test_out_indices_come_in_the_order_of_out_channels(cls, kwargs):
    with pytest.raises(ValueError, match=r'not in ascending order.*out_indices=\(0, 3\)'):
        cls(out_indices=(3, 0), **kwargs)
    with pytest.raises(ValueError, match='out_indices is empty'):
        cls(out_indices=(), **kwargs)
    with pytest.raises(ValueError, match='ints'):
        cls(out_indices=(0, 1.0), **kwargs)
    model = cls(out_indices=(0, -1), **kwargs).eval()
    outs = model(torch.rand(1, 3, 64, 64))
    assert model.out_channels == tuple(o.shape[1] for o in outs) == (model.stage_channels[0], model.stage_channels[3])


@pytest.mark.parametrize('cls,kwargs', FAMILIES)
def test_an_empty_batch_gives_empty_features(cls, kwargs):
    model = cls(**kwargs)
    for mode in (False, True):
        outs = model.train(mode)(torch.rand(0, 3, 64, 64))
        assert [tuple(o.shape) for o in outs] == [(0, c, 64 // s, 64 // s)
                                                  for c, s in zip(model.stage_channels, model.strides)]
    assert all(torch.isfinite(b).all() for b in model.buffers() if b.is_floating_point())


@pytest.mark.parametrize('cls,kwargs', FAMILIES)
def test_frozen_stages_and_drop_path_rate_are_checked(cls, kwargs):
    with pytest.raises(ValueError, match=r'frozen_stages must be an integer in \[-1, 4\].*got 1.5'):
        cls(frozen_stages=1.5, **kwargs)
    for rate in (1.0, -0.1, math.nan, '0.1'):
        with pytest.raises(ValueError, match=r'drop_path_rate must be a number in \[0, 1\)'):
            cls(drop_path_rate=rate, **kwargs)
    cls(drop_path_rate=0.3, frozen_stages=1, **kwargs)


def test_edgevit_width_below_head_dim():
    arch = dict(depths=(1, 1, 1, 1), widths=(16, 32, 64, 128), head_dim=32, mlp_ratio=4., sr_ratios=(4, 2, 2, 1),
                qkv_bias=True)
    with pytest.raises(ValueError, match='no attention head.*multiple of head_dim'):
        EdgeViT(arch)
    EdgeViT(dict(arch, head_dim=16))


