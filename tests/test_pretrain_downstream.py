"""From ImageNet to the downstream configs: a pretraining run on the built-in dataset's
ImageNet layout writes a checkpoint that every downstream config of the same arch loads,
every backbone weight of it, with nothing missing or left over (all registered variants, at
a tiny size); and the main job's --pretrain path runs end to end."""
import glob
import os.path as osp

import pytest

pytest.importorskip('mmpretrain')
from backbones.checkpoints.loading import load_pretrained  # noqa: E402
from backbones.demo.configs import classification_config  # noqa: E402
from backbones.demo.dataset import make_dataset  # noqa: E402
from backbones.demo.job import pretraining_configs, run_demo  # noqa: E402
from backbones.registry import variants  # noqa: E402
from backbones.runtime.engine import train  # noqa: E402
from backbones.runtime.models import load_config  # noqa: E402

from .conftest import CONFIGS, DEMO_DET_CONFIG, DEMO_SEG_CONFIG, in_process_loaders  # noqa: E402
from .test_configs import TASKS  # noqa: E402

CLASSIFICATION = str(CONFIGS / 'classification')


def _downstream(variant):
    return [str(CONFIGS / ('segmentation' if t.startswith('fpn') else 'detection') /
                t.format(m=variant.cls.model_prefix, a=variant.arch)) for t in TASKS]


def _build_backbone(config):
    """The backbone of a downstream config, as its toolbox builds it (init_cfg aside)."""
    cfg = load_config(config)
    backbone = dict(cfg.model.backbone)
    backbone.pop('init_cfg', None)
    scope = cfg.get('default_scope')
    if scope == 'mmseg':
        from mmseg.registry import MODELS
    else:
        from mmdet.registry import MODELS
    if backbone.get('norm_cfg', {}).get('type') == 'SyncBN':
        backbone['norm_cfg'] = dict(type='BN', requires_grad=True)
    return MODELS.build(backbone)


@pytest.mark.slow
@pytest.mark.parametrize('variant', variants(), ids=lambda v: v.name)
def test_a_pretraining_checkpoint_initialises_every_downstream_config_of_its_arch(variant, tmp_path):
    roots = make_dataset(str(tmp_path / 'data'), num_train=3, num_val=1, size=(64, 64), seed=0)
    [config] = pretraining_configs(_downstream(variant)[:1], CLASSIFICATION).values()
    cfg = classification_config(config, roots['imagenet'], 32, iters=1, batch_size=2,
                                work_dir=str(tmp_path / 'pretrain'))
    in_process_loaders(cfg, ['train_dataloader'])
    train(cfg)
    checkpoint = str(tmp_path / 'pretrain' / 'iter_1.pth')
    for downstream in _downstream(variant):
        backbone = _build_backbone(downstream)
        report = load_pretrained(backbone, checkpoint)
        assert report['missing'] == [] and report['unexpected'] == [], (downstream, report)
        assert {k.split('.')[0] for k in report['ignored']} <= {'norm', 'head', 'head_dist'}


@pytest.mark.slow
def test_the_main_job_pretrains_then_trains_downstream_from_it(tmp_path):
    results = run_demo(work_dir=str(tmp_path), det_config=DEMO_DET_CONFIG, seg_config=DEMO_SEG_CONFIG, num_train=4,
                       num_val=2, size=64, det_iters=2, seg_iters=2, batch_size=2, num_vis=0, export_formats=(),
                       classification_dir=CLASSIFICATION, pretrain_iters=2)
    pretrained = results['pretraining']
    assert set(pretrained) == {'efficientformerv2_s0', 'edgevit_xxs'}
    for name, r in pretrained.items():
        assert osp.isfile(r['checkpoint']) and 'accuracy/top1' in r['metrics']
    assert results['detection']['pretrained'] == pretrained['efficientformerv2_s0']['checkpoint']
    assert results['segmentation']['pretrained'] == pretrained['edgevit_xxs']['checkpoint']
    assert glob.glob(str(tmp_path / 'pretrain' / '*' / 'iter_2.pth'))


def test_each_backbone_of_the_task_configs_has_a_classification_config():
    found = pretraining_configs([c for v in variants() for c in _downstream(v)], CLASSIFICATION)
    assert set(found) == {v.name for v in variants()}
    assert all(osp.basename(c).startswith(n.replace('_', '-') + '_') for n, c in found.items())
