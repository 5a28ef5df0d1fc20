"""Every downstream config: loads, builds, trains one step and predicts, on a small input.

Also checks whole-model parameter counts against the papers' tables in PAPERS.md (../shared, or the copy in tests/data).
"""
import glob
import os.path as osp
import re

import pytest
import torch

from backbones.runtime.models import load_config
from backbones.runtime.models import build_model_from_config

from .conftest import ROOT

CONFIGS = sorted(glob.glob(str(ROOT / 'configs' / 'detection' / '*.py'))) + \
    sorted(glob.glob(str(ROOT / 'configs' / 'segmentation' / '*.py')))
SIZE = 96


def test_there_are_21_configs_named_by_convention():
    names = [osp.basename(c) for c in CONFIGS]
    assert len(names) == 21
    pattern = re.compile(r'^(retinanet|mask-rcnn)_(edgevit-(xxs|xs|s)|efficientformerv2-(s0|s1|s2|l))_fpn_8xb2-1x_coco\.py$|'
                         r'^fpn_(edgevit-(xxs|xs|s)|efficientformerv2-(s0|s1|s2|l))_8xb4-40k_ade20k-512x512\.py$')
    assert all(pattern.match(n) for n in names), names


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


def _paper_params(text):
    """{(task, arch): params} for EdgeViT from PAPERS.md's downstream tables."""
    out = {}
    for title, task in (('RetinaNet 1x', 'retinanet'), ('Mask R-CNN 1x', 'mask-rcnn'), ('Semantic FPN', 'fpn')):
        section = text.split(title, 1)[1].split('\n## ', 1)[0]
        for line in section.splitlines():
            m = re.match(r'\|\s*EdgeViT-(XXS|XS|S)\s*(\(≈\))?\s*\|\s*([\d.]+)\s*\|', line)
            if m:
                out[(task, m.group(1).lower())] = float(m.group(3))
    assert len(out) == 9
    return out


def test_whole_model_parameters_match_the_papers(papers_text):
    for (task, arch), paper in _paper_params(papers_text).items():
        [config] = [c for c in CONFIGS if osp.basename(c).startswith(f'{task}_edgevit-{arch}_')]
        model, _ = build_model_from_config(config)
        params = sum(p.numel() for p in model.parameters()) / 1e6
        assert abs(params - paper) <= 0.03 * paper, (config, params, paper)


@pytest.mark.parametrize('config', [c for c in CONFIGS if 'efficientformerv2' in c], ids=lambda p: osp.basename(p)[:-3])
def test_efficientformer_configs_use_the_official_dense_settings(config):
    cfg = load_config(config)
    backbone = cfg.model.backbone
    assert backbone.bias_mode == 'official' and backbone.norm_eval is False
    assert backbone.resolution == (512 if 'ade20k' in config else 800)
    assert cfg.optim_wrapper.optimizer.type == 'AdamW'
    assert cfg.auto_scale_lr.base_batch_size == (32 if 'ade20k' in config else 16)
