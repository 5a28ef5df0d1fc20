"""The downstream configs: one per task and variant, named by convention; each loads, builds,
trains one step and predicts on a small input; the recipes' settings (SyncBN, AlignResize,
auto_scale_lr as mmdet ships it); whole-model parameter counts against the papers' tables
in PAPERS.md (../shared, or the copy in tests/data)."""
import glob
import math
import os
import os.path as osp
import re

import numpy as np
import pytest
import torch
import torch.nn as nn
from torch.nn.modules.batchnorm import _BatchNorm

from backbones.registry import variants
from backbones.runtime.engine import prepare_train_config
from backbones.runtime.models import build_model_from_config, load_config

from .conftest import ROOT, paper_row

CONFIGS = sorted(glob.glob(str(ROOT / 'configs' / 'detection' / '*.py'))) + \
    sorted(glob.glob(str(ROOT / 'configs' / 'segmentation' / '*.py')))
SIZE = 96
SYNC_BN = dict(type='SyncBN', requires_grad=True)
#: the config names of one variant (its family's prefix and arch), per task
TASKS = ('retinanet_{m}-{a}_fpn_8xb2-1x_coco.py', 'mask-rcnn_{m}-{a}_fpn_8xb2-1x_coco.py',
         'fpn_{m}-{a}_8xb4-40k_ade20k-512x512.py')


def test_one_config_per_task_and_registered_variant():
    expected = {t.format(m=v.cls.model_prefix, a=v.arch) for v in variants() for t in TASKS}
    assert {osp.basename(c) for c in CONFIGS} == expected


@pytest.mark.parametrize('config', CONFIGS, ids=lambda p: osp.basename(p)[:-3])
def test_auto_scale_lr_is_off_and_states_the_batch_in_the_name(config):
    """As mmdet ships its configs: linear lr scaling off unless asked for (--auto-scale-lr),
    with the recipe's total batch (8xb2: 16 images) as its base."""
    gpus, per_gpu = map(int, re.search(r'_(\d+)xb(\d+)-', osp.basename(config)).groups())
    cfg = load_config(config)
    assert cfg.auto_scale_lr == dict(enable=False, base_batch_size=gpus * per_gpu)
    assert cfg.train_dataloader.batch_size == per_gpu
    assert prepare_train_config(config).auto_scale_lr.enable is False
    assert prepare_train_config(config, auto_scale_lr=True).auto_scale_lr.enable is True


def _det_batch(num_classes: int):
    from mmdet.structures import DetDataSample
    from mmdet.structures.mask import BitmapMasks
    from mmengine.structures import InstanceData
    g = torch.Generator().manual_seed(0)
    inputs, samples = [], []
    for i in range(2):
        inputs.append((torch.rand(3, SIZE, SIZE, generator=g) * 255).to(torch.uint8))
        sample = DetDataSample(metainfo=dict(img_shape=(SIZE, SIZE), ori_shape=(SIZE, SIZE), scale_factor=(1., 1.),
                                             pad_shape=(SIZE, SIZE), img_id=i, flip=False))
        boxes = torch.tensor([[10., 12., 60., 70.], [40., 30., 90., 85.]])
        masks = torch.zeros(2, SIZE, SIZE, dtype=torch.uint8)
        for j, (x0, y0, x1, y1) in enumerate(boxes.int().tolist()):
            masks[j, y0:y1, x0:x1] = 1
        sample.gt_instances = InstanceData(bboxes=boxes, labels=torch.tensor([1, num_classes - 1]),
                                           masks=BitmapMasks(masks.numpy(), SIZE, SIZE))
        samples.append(sample)
    return dict(inputs=inputs, data_samples=samples)


def _seg_batch(num_classes: int):
    from mmengine.structures import PixelData
    from mmseg.structures import SegDataSample
    g = torch.Generator().manual_seed(0)
    inputs, samples = [], []
    for _ in range(2):
        inputs.append((torch.rand(3, SIZE, SIZE, generator=g) * 255).to(torch.uint8))
        sample = SegDataSample(metainfo=dict(img_shape=(SIZE, SIZE), ori_shape=(SIZE, SIZE), pad_shape=(SIZE, SIZE)))
        label = torch.randint(0, num_classes, (1, SIZE, SIZE), generator=g)
        sample.gt_sem_seg = PixelData(data=label)
        samples.append(sample)
    return dict(inputs=inputs, data_samples=samples)


@pytest.mark.slow
@pytest.mark.parametrize('config', CONFIGS, ids=lambda p: osp.basename(p)[:-3])
def test_config_trains_one_step_and_predicts(config):
    torch.manual_seed(0)
    model, scope = build_model_from_config(config)
    cfg = load_config(config)
    assert cfg.custom_imports['imports'] == ['backbones']
    if scope == 'mmseg':
        model.data_preprocessor.size = (SIZE, SIZE)  # the crop size, reduced for the test
        data = _seg_batch(cfg.model.decode_head.num_classes)
    else:
        head = cfg.model.get('roi_head', {}).get('bbox_head', cfg.model.get('bbox_head'))
        data = _det_batch(head['num_classes'])
    model.train()
    batch = model.data_preprocessor(data, True)
    losses = model(**batch, mode='loss')
    loss, log_vars = model.parse_losses(losses)
    assert torch.isfinite(loss), log_vars
    loss.backward()
    grads = [p.grad for p in model.backbone.parameters() if p.requires_grad]
    assert grads and any(g is not None and g.abs().sum() > 0 for g in grads)
    assert all(torch.isfinite(g).all() for g in grads if g is not None)
    model.eval()
    with torch.no_grad():
        preds = model(**model.data_preprocessor(data, False), mode='predict')
    assert len(preds) == 2
    if scope == 'mmseg':
        assert preds[0].pred_sem_seg.data.shape[-2:] == (SIZE, SIZE)
    else:
        assert hasattr(preds[0], 'pred_instances')
        if 'mask-rcnn' in config:
            assert 'masks' in preds[0].pred_instances


def test_whole_model_parameters_match_the_papers(papers_text):
    """Every config whose paper prints a parameter count (EdgeViT's nine) matches it to 3%."""
    checked = 0
    for config in CONFIGS:
        paper = paper_row(papers_text, osp.basename(config)[:-3]).get('params')
        if paper is None:
            continue
        model, _ = build_model_from_config(config)
        params = sum(p.numel() for p in model.parameters()) / 1e6
        assert abs(params - float(paper)) <= 0.03 * float(paper), (config, params, paper)
        checked += 1
    assert checked > 0


@pytest.mark.parametrize('config', [c for c in CONFIGS if 'efficientformerv2' in c], ids=lambda p: osp.basename(p)[:-3])
def test_efficientformer_configs_use_the_official_dense_settings(config):
    cfg = load_config(config)
    backbone = cfg.model.backbone
    assert backbone.bias_mode == 'official' and backbone.norm_eval is False
    assert backbone.resolution == (512 if 'ade20k' in config else 800)
    assert cfg.optim_wrapper.optimizer.type == 'AdamW'
    assert cfg.auto_scale_lr.base_batch_size == (32 if 'ade20k' in config else 16)


# ---------------------------------------------------------------------------- configs
EF_CONFIGS = [c for c in CONFIGS if 'efficientformerv2' in c]


SEG_CONFIGS = [c for c in CONFIGS if osp.basename(c).startswith('fpn_')]


def _build_backbone(cfg):
    from mmdet.registry import MODELS
    backbone = cfg.model.backbone.copy()
    backbone.pop('init_cfg', None)
    return MODELS.build(backbone)


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
