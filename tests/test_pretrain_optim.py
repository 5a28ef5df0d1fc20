"""The optimisation of the pretraining configs: adaptive gradient clipping through the optim
wrappers equals timm's ``adaptive_clip_grad`` applied by hand (after AMP unscaling), ``--amp``
and CPU machines map the wrappers to their twins, and the weight-decay split equals the
official rule (ndim <= 1 or a name ending in '.bias') on the official parameter shapes."""
import copy
import glob

import pytest
import torch
import torch.nn as nn
from timm.utils.agc import adaptive_clip_grad

pytest.importorskip('mmpretrain')
from backbones.pretrain.optim import AGCOptimWrapper, AmpAGCOptimWrapper  # noqa: E402
from backbones.registry import FAMILIES  # noqa: E402
from backbones.runtime.cli import UserError  # noqa: E402
from backbones.runtime.engine import adapt_to_machine, amp_optim_wrapper  # noqa: E402
from backbones.runtime.models import load_config  # noqa: E402

from .conftest import ROOT  # noqa: E402
from .pretrain_helpers import TINY, official_keys, tiny_classifier  # noqa: E402

AGC = dict(type='agc', clip_factor=0.01, eps=1e-3)
CLASSIFICATION = ROOT / 'configs' / 'classification'


def _net():
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 8, 3), nn.BatchNorm2d(8), nn.ReLU(), nn.Flatten(), nn.Linear(8 * 4 * 4, 5))


def _loss(net, scale: float = 1.0):
    g = torch.Generator().manual_seed(1)
    x = torch.randn(4, 3, 6, 6, generator=g) * scale
    return net(x).logsumexp(dim=1).mean() * 10


def _grads(net):
    return [p.grad.clone() for p in net.parameters()]


@pytest.mark.parametrize('optimizer', ['AdamW', 'SGD'])
def test_agc_step_equals_timm_adaptive_clip_grad_by_hand(optimizer):
    ours, manual = _net(), _net()
    make = dict(AdamW=lambda p: torch.optim.AdamW(p, lr=1e-2, weight_decay=0.025),
                SGD=lambda p: torch.optim.SGD(p, lr=0.5, momentum=0.9))[optimizer]
    wrapper = AGCOptimWrapper(optimizer=make(ours.parameters()), clip_grad=dict(AGC))
    manual_opt = make(manual.parameters())
    for _ in range(2):  # the second step also checks the optimizer state
        wrapper.backward(_loss(ours))
        wrapper.step()
        clipped = _grads(ours)
        wrapper.zero_grad()

        _loss(manual).backward()
        raw = _grads(manual)
        adaptive_clip_grad(manual.parameters(), clip_factor=0.01, eps=1e-3)
        assert any(not torch.equal(r, c) for r, c in zip(raw, _grads(manual))), 'clipping never triggered'
        for a, b in zip(clipped, _grads(manual)):
            assert torch.equal(a, b)
        manual_opt.step()
        manual_opt.zero_grad()
        for a, b in zip(ours.parameters(), manual.parameters()):
            assert torch.equal(a, b)


@pytest.mark.skipif(not hasattr(torch.amp, 'GradScaler'),
                    reason=f'a CPU grad scaler (torch.amp.GradScaler) needs torch >= 2.3; torch {torch.__version__} '
                           'has only the CUDA one')
def test_amp_agc_clips_the_unscaled_gradients(monkeypatch):
    """The AMP twin unscales, clips, then steps (the official NativeScaler order). A CPU grad
    scaler stands in for CUDA's: clipping the still-scaled gradients would give others."""
    from mmengine.optim.optimizer import amp_optimizer_wrapper
    monkeypatch.setattr(amp_optimizer_wrapper, 'is_cuda_available', lambda: True)
    ours, manual = _net(), _net()
    wrapper = AmpAGCOptimWrapper(optimizer=torch.optim.SGD(ours.parameters(), lr=0.5), clip_grad=dict(AGC))
    wrapper.loss_scaler = torch.amp.GradScaler('cpu', init_scale=2.0 ** 12)
    wrapper.backward(_loss(ours))
    wrapper.step()

    _loss(manual).backward()
    scaled = copy.deepcopy(manual)
    for p, g in zip(scaled.parameters(), _grads(manual)):  # the wrong order: clip scaled gradients
        p.grad = g * 2.0 ** 12
    adaptive_clip_grad(manual.parameters(), clip_factor=0.01, eps=1e-3)
    for a, b in zip(_grads(ours), _grads(manual)):
        assert torch.equal(a, b)
    adaptive_clip_grad(scaled.parameters(), clip_factor=0.01, eps=1e-3)
    assert any(not torch.allclose(p.grad / 2.0 ** 12, g) for p, g in zip(scaled.parameters(), _grads(manual)))
    torch.optim.SGD(manual.parameters(), lr=0.5).step()
    for a, b in zip(ours.parameters(), manual.parameters()):
        assert torch.equal(a, b)


@pytest.mark.skipif(not torch.cuda.is_available(), reason='needs CUDA (mmengine AmpOptimWrapper)')
def test_amp_agc_step_on_cuda():
    ours, manual = _net().cuda(), _net().cuda()
    wrapper = AmpAGCOptimWrapper(optimizer=torch.optim.SGD(ours.parameters(), lr=0.5), clip_grad=dict(AGC),
                                 loss_scale=2.0 ** 10)
    wrapper.backward(_loss(ours))
    wrapper.step()
    _loss(manual).backward()
    adaptive_clip_grad(manual.parameters(), clip_factor=0.01, eps=1e-3)
    torch.optim.SGD(manual.parameters(), lr=0.5).step()
    for a, b in zip(ours.parameters(), manual.parameters()):
        torch.testing.assert_close(a, b)


@pytest.mark.parametrize('clip_grad, message', [
    (None, 'needs clip_grad'),
    (dict(type='norm', max_norm=1.0), "clips with clip_grad type 'agc'"),
    (dict(type='agc', clip_factor=0.01, max_norm=2), 'takes clip_factor, eps and norm_type'),
    (dict(type='agc', clip_factor=-1), r'clip_grad.clip_factor must be a number > 0, got -1'),
])
def test_bad_clip_grad_is_named(clip_grad, message):
    with pytest.raises(ValueError, match=message):
        AGCOptimWrapper(optimizer=torch.optim.SGD(_net().parameters(), lr=0.1), clip_grad=clip_grad)


def test_amp_flag_and_cpu_machines_map_the_wrappers_to_their_twins(monkeypatch):
    assert amp_optim_wrapper('OptimWrapper') == 'AmpOptimWrapper'
    assert amp_optim_wrapper('AGCOptimWrapper') == 'AmpAGCOptimWrapper'
    assert amp_optim_wrapper('AmpAGCOptimWrapper') == 'AmpAGCOptimWrapper'
    with pytest.raises(UserError, match=r'NoSuchWrapper has no mixed-precision counterpart '
                                        r'\(AmpNoSuchWrapper is not registered\)'):
        amp_optim_wrapper('NoSuchWrapper')
    monkeypatch.setattr(torch.cuda, 'is_available', lambda: False)
    for config, fp32 in (('edgevit-xxs_*.py', 'OptimWrapper'), ('efficientformerv2-s0_*.py', 'AGCOptimWrapper')):
        [path] = glob.glob(str(CLASSIFICATION / config))
        cfg = load_config(path)
        cfg.optim_wrapper.type = amp_optim_wrapper(cfg.optim_wrapper.get('type', 'OptimWrapper'))
        cfg.optim_wrapper.setdefault('loss_scale', 'dynamic')
        adapted = adapt_to_machine(cfg)
        assert adapted.optim_wrapper.type == fp32 and 'loss_scale' not in adapted.optim_wrapper
        assert adapted.get('sync_bn') is None
        if fp32 == 'AGCOptimWrapper':
            assert adapted.optim_wrapper.clip_grad == AGC


# ---------------------------------------------------------------------------- weight decay
@pytest.mark.parametrize('family', sorted(TINY))
def test_weight_decay_split_is_the_official_rule_on_the_official_shapes(family, compact_reference):
    from mmengine.optim import build_optim_wrapper
    # the official rule (timm param_groups_weight_decay) on the official names and shapes
    official = {k: not (v.ndim <= 1 or key.endswith('.bias'))
                for k, (key, v) in official_keys(family, compact_reference).items()}
    model = tiny_classifier(family)
    prefix = FAMILIES[family].model_prefix
    config = sorted(glob.glob(str(CLASSIFICATION / f'{prefix}-*.py')))[0]
    cfg = load_config(config).optim_wrapper
    wd = cfg.optimizer.weight_decay
    wrapper = build_optim_wrapper(model, dict(type='OptimWrapper', optimizer=dict(cfg.optimizer),
                                              paramwise_cfg=dict(cfg.paramwise_cfg)))
    decay_of = {id(p): g['weight_decay'] for g in wrapper.optimizer.param_groups for p in g['params']}
    ours = {name: decay_of[id(p)] for name, p in model.named_parameters()}
    # the official state dict also holds buffers: each maps to one of ours
    buffers = set(official) - set(ours)
    assert buffers <= {name for name, _ in model.named_buffers()}, sorted(buffers)[:5]
    official = {k: v for k, v in official.items() if k not in buffers}
    assert set(ours) == set(official), sorted(set(ours) ^ set(official))[:10]
    for name, decayed in official.items():
        assert ours[name] == (wd if decayed else 0.0), name
    # what makes the rule matter here: EfficientFormerV2's (dim, 1, 1) layer scales are
    # decayed, although ours are vectors (flat_decay_mult would exclude them)
    if family == 'EfficientFormerV2':
        scales = [n for n in official if n.endswith(('ls1.gamma', 'ls2.gamma'))]
        assert scales and all(official[n] and model.get_parameter(n).ndim == 1 for n in scales)
        assert any(n.endswith('attention_biases') and official[n] for n in official)
    assert 'flat_decay_mult' not in cfg.paramwise_cfg
