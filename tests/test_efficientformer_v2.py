"""The training recipes: EfficientFormerV2's BatchNorm as the official dense recipe trains it
(SyncBN, statistics not frozen), its initialisation, and the configs that use them."""
import math
import os

import numpy as np
import pytest
import torch
import torch.nn as nn
from torch.nn.modules.batchnorm import _BatchNorm

from backbones import EfficientFormerV2
from backbones.export.prepare import prepare_for_export
from backbones.runtime.engine import prepare_train_config
from backbones.runtime.models import load_config

from .conftest import ROOT

SYNC_BN = dict(type='SyncBN', requires_grad=True)


def _randomise_norms(model):
    with torch.no_grad():
        for name, p in model.named_parameters():
            if '.bn.' in name:
                p.uniform_(0.5, 1.5) if name.endswith('weight') else p.normal_(0, 0.2)
            elif name.endswith('gamma'):
                p.uniform_(0.5, 1.5)
        for name, b in model.named_buffers():
            if name.endswith('running_mean'):
                b.normal_(0, 0.2)
            elif name.endswith('running_var'):
                b.uniform_(0.5, 2.0)
    return model


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


# ---------------------------------------------------------------------------- configs
EF_CONFIGS = sorted(str(p) for p in (ROOT / 'configs').glob('*/*efficientformerv2*.py'))
SEG_CONFIGS = sorted(str(p) for p in (ROOT / 'configs' / 'segmentation').glob('fpn_*.py'))


def _build_backbone(cfg):
    from mmdet.registry import MODELS
    backbone = cfg.model.backbone.copy()
    backbone.pop('init_cfg', None)
    return MODELS.build(backbone)


def test_config_sets():
    assert len(EF_CONFIGS) == 12 and len(SEG_CONFIGS) == 7


@pytest.mark.slow
@pytest.mark.parametrize('config', EF_CONFIGS, ids=lambda p: os.path.basename(p)[:-3])
def test_efficientformer_config_trains_backbone_bn_with_synchronised_statistics(config, monkeypatch):
    """As the official dense backbone: every BatchNorm is SyncBN, trained (not kept in eval);
    without CUDA the tools build plain BN, also trained."""
    monkeypatch.setattr(torch.cuda, 'is_available', lambda: True)
    cfg = prepare_train_config(config)  # what tools/train.py runs
    assert cfg.model.backbone.norm_cfg == SYNC_BN and cfg.model.backbone.norm_eval is False
    backbone = _build_backbone(cfg).train()
    norms = [m for m in backbone.modules() if isinstance(m, _BatchNorm)]
    assert norms and all(isinstance(m, nn.SyncBatchNorm) and m.training for m in norms)
    assert all(p.requires_grad for m in norms for p in m.parameters())

    monkeypatch.setattr(torch.cuda, 'is_available', lambda: False)
    cfg = prepare_train_config(config)
    assert cfg.model.backbone.norm_cfg == dict(type='BN', requires_grad=True)
    backbone = _build_backbone(cfg).train()
    norms = [m for m in backbone.modules() if isinstance(m, _BatchNorm)]
    assert norms and all(type(m) is nn.BatchNorm2d and m.training for m in norms)


@pytest.mark.parametrize('config', SEG_CONFIGS, ids=lambda p: os.path.basename(p)[:-3])
def test_segmentation_test_pipeline_aligns_sides_to_32(config, tmp_path):
    """PVT's and EfficientFormer's AlignResize: keep-ratio resize into (2048, 512), then each
    side up to the next multiple of 32. The label map stays at the original size."""
    import mmcv
    import mmseg.datasets  # noqa: F401  (registers the transforms)
    from mmengine.dataset import Compose
    from mmengine.registry import init_default_scope
    from mmseg.registry import TRANSFORMS

    h, w = 333, 517
    rng = np.random.default_rng(0)
    mmcv.imwrite((rng.random((h, w, 3)) * 255).astype(np.uint8), str(tmp_path / 'img.jpg'))
    mmcv.imwrite(rng.integers(0, 150, (h, w), dtype=np.uint8), str(tmp_path / 'seg.png'))
    init_default_scope('mmseg')
    cfg = load_config(config)
    for loader in ('val_dataloader', 'test_dataloader'):
        pipeline = Compose([TRANSFORMS.build(t) for t in cfg[loader].dataset.pipeline])
        out = pipeline(dict(img_path=str(tmp_path / 'img.jpg'), seg_map_path=str(tmp_path / 'seg.png'),
                            reduce_zero_label=True, seg_fields=[]))
        new_w, new_h = mmcv.rescale_size((w, h), (2048, 512))
        assert tuple(out['inputs'].shape[1:]) == (math.ceil(new_h / 32) * 32, math.ceil(new_w / 32) * 32) == (512, 800)
        assert tuple(out['data_samples'].gt_sem_seg.data.shape[1:]) == (h, w)
