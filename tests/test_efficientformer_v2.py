"""EfficientFormerV2 beyond the backbone contract: its BatchNorms as the official dense recipe
trains them (norm_cfg SyncBN under the same parameter names, statistics not frozen) and its
official initialisation."""
import math

import pytest
import torch
import torch.nn as nn
from torch.nn.modules.batchnorm import _BatchNorm

from backbones import EfficientFormerV2
from backbones.export.prepare import prepare_for_export

from .conftest import randomise_bn_statistics

SYNC_BN = dict(type='SyncBN', requires_grad=True)


def _randomise_norms(model):
    with torch.no_grad():
        for name, p in model.named_parameters():
            if '.bn.' in name:
                p.uniform_(0.5, 1.5) if name.endswith('weight') else p.normal_(0, 0.2)
            elif name.endswith('gamma'):
                p.uniform_(0.5, 1.5)
    return randomise_bn_statistics(model)


def test_norm_cfg_builds_syncbn_under_the_same_names():
    plain = _randomise_norms(EfficientFormerV2('s0', resolution=128))
    sync = EfficientFormerV2('s0', resolution=128, norm_cfg=SYNC_BN)
    norms = [m for m in sync.modules() if isinstance(m, _BatchNorm)]
    assert norms and all(isinstance(m, nn.SyncBatchNorm) for m in norms)
    assert sum(isinstance(m, nn.BatchNorm2d) for m in plain.modules()) == len(norms)
    assert sync.state_dict().keys() == plain.state_dict().keys()  # checkpoints load either way
    sync.load_state_dict(plain.state_dict(), strict=True)
    x = torch.randn(2, 3, 97, 131)
    for mode in (True, False):  # batch statistics (one process: nothing to synchronise), then running
        plain.train(mode)
        sync.train(mode)
        for a, b in zip(plain(x), sync(x)):
            torch.testing.assert_close(b, a, rtol=0, atol=0)


def test_norm_cfg_requires_grad_and_other_types():
    frozen = EfficientFormerV2('s0', norm_cfg=dict(type='BN', requires_grad=False))
    bn_params = [p for n, p in frozen.named_parameters() if '.bn.' in n]
    assert bn_params and not any(p.requires_grad for p in bn_params)
    with pytest.raises(ValueError, match='must build a BatchNorm'):
        EfficientFormerV2('s0', norm_cfg=dict(type='GN', num_groups=1))


@pytest.mark.parametrize('norm_eval', [False, True])
def test_norm_eval_decides_whether_syncbn_statistics_train(norm_eval):
    model = EfficientFormerV2('s0', resolution=64, norm_cfg=SYNC_BN, norm_eval=norm_eval).train()
    norms = [m for m in model.modules() if isinstance(m, nn.SyncBatchNorm)]
    assert all(m.training != norm_eval for m in norms)
    before = norms[0].running_mean.clone()
    model(torch.randn(2, 3, 64, 64))
    assert torch.equal(norms[0].running_mean, before) == norm_eval


def test_syncbn_model_prepares_for_export():
    """Eval-mode SyncBN is a plain batch norm: the export folds (layer scales into the
    closing BatchNorms) and the exported outputs are unchanged."""
    model = _randomise_norms(EfficientFormerV2('s0', resolution=128, norm_cfg=SYNC_BN)).eval()
    deployed = prepare_for_export(model, (128, 160))
    x = torch.randn(1, 3, 128, 160)
    with torch.no_grad():
        for a, b in zip(model(x), deployed(x)):
            torch.testing.assert_close(b, a, rtol=1e-5, atol=1e-5)


def test_mlp_mid_conv_keeps_the_pytorch_default_initialisation():
    """The official Mlp runs its truncated-normal init before it creates ``mid``, so only fc1
    and fc2 are trunc_normal(0.02) with zero bias; the depth-wise 3x3 ``mid`` keeps PyTorch's
    kaiming_uniform(a=sqrt(5)), i.e. U(-1/sqrt(9), 1/sqrt(9)) for weights and bias alike."""
    model = EfficientFormerV2('s1')
    mids, fcs = [], []
    for m in model.modules():
        if hasattr(m, 'mid') and hasattr(m, 'fc1'):
            mids.append(m.mid.conv)
            fcs += [m.fc1.conv, m.fc2.conv]
    bound = 1 / math.sqrt(9)
    weights = torch.cat([c.weight.flatten() for c in mids])
    biases = torch.cat([c.bias.flatten() for c in mids])
    for values in (weights, biases):
        assert values.abs().max() <= bound
        assert abs(values.std().item() - bound / math.sqrt(3)) < 0.05 * bound / math.sqrt(3)
    fc_weights = torch.cat([c.weight.flatten() for c in fcs])
    assert abs(fc_weights.std().item() - 0.02) < 0.002
    assert all(c.bias.abs().max() == 0 for c in fcs)
