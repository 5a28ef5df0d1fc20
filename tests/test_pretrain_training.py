"""A pretraining config trains through the project's train entry (prepare_train_config + train)
on CPU: a few tiny images in mmpretrain's CustomDataset folder layout, 2 iterations, the
recipe's pipeline, sampler, schedule, optim wrapper, EMA and (for a distilling family) a
teacher; the checkpoint holds the classifier as ``backbone.*`` and ``head.{norm,head,head_dist}.*``,
and the test entry (prepare_test_config + test) evaluates it."""
import copy
import glob

import numpy as np
import pytest
import torch

pytest.importorskip('mmpretrain')
from backbones.checkpoints.io import load_local_checkpoint  # noqa: E402
from backbones.registry import FAMILIES  # noqa: E402
from backbones.runtime import engine  # noqa: E402
from backbones.runtime.models import load_config  # noqa: E402

from .conftest import ROOT  # noqa: E402

SIZE = 64


def _first_config(family: str) -> str:
    """The config of the family's first variant (the smallest of both families)."""
    cls = FAMILIES[family]
    [config] = glob.glob(str(ROOT / 'configs' / 'classification' / f'{cls.model_prefix}-{next(iter(cls.arch_settings))}_*.py'))
    return config


def _folder_dataset(root):
    """Two classes of two images each, as mmpretrain's CustomDataset reads them."""
    from PIL import Image
    rng = np.random.default_rng(0)
    for name in ('cat', 'dog'):
        (root / name).mkdir(parents=True)
        for i in range(2):
            Image.fromarray(rng.integers(0, 255, (SIZE + 8, SIZE + 16, 3), dtype=np.uint8)).save(root / name / f'{i}.png')
    return root


def _small(pipeline, train: bool):
    """The config's pipeline at SIZE: crops to SIZE, the eval resize at the recipe's 256 / 224."""
    out = []
    for t in pipeline:
        t = {k: v for k, v in dict(t).items() if k != '_scope_'}
        if t['type'] == 'RandomResizedCrop' or t['type'] == 'CenterCrop':
            t['scale' if train else 'crop_size'] = SIZE
        elif t['type'] == 'ResizeEdge':
            t['scale'] = SIZE * 256 // 224
        out.append(t)
    return out


@pytest.mark.slow
@pytest.mark.parametrize('family', sorted(FAMILIES))
def test_config_trains_two_iterations_on_cpu_and_saves_the_classifier(family, tmp_path, monkeypatch):
    monkeypatch.setattr(torch.cuda, 'is_available', lambda: False)  # the CPU path, even on a GPU machine
    config = _first_config(family)
    base = load_config(config)
    data = _folder_dataset(tmp_path / 'data')
    loader = dict(batch_size=2, num_workers=0, persistent_workers=False, pin_memory=False)
    options = {
        'train_dataloader': dict(loader, dataset=dict(_delete_=True, type='CustomDataset', data_root=str(data),
                                                      pipeline=_small(base.train_dataloader.dataset.pipeline, True))),
        'train_cfg.max_epochs': 1,
        'train_cfg.val_interval': 1,
        'default_hooks.logger.interval': 1,
    }
    for split in ('val', 'test'):
        options[f'{split}_dataloader'] = dict(loader, dataset=dict(
            _delete_=True, type='CustomDataset', data_root=str(data),
            pipeline=_small(base[f'{split}_dataloader'].dataset.pipeline, False)))
    distills = base.model.type == 'DistillingClassifier'
    if distills:  # a tiny timm teacher, stored as DeiT stores regnety_160
        import timm
        teacher = timm.create_model('test_resnet', num_classes=1000)
        torch.save({'model': teacher.state_dict()}, tmp_path / 'teacher.pth')
        options['model.teacher'] = dict(name='test_resnet', checkpoint=str(tmp_path / 'teacher.pth'))

    cfg = engine.prepare_train_config(config, work_dir=str(tmp_path / 'work'), cfg_options=copy.deepcopy(options))
    assert cfg.get('sync_bn') is None and not cfg.optim_wrapper.get('type', 'OptimWrapper').startswith('Amp')
    runner = engine.train(cfg)

    assert runner.iter == 2 and runner.epoch == 1
    hub = runner.message_hub
    assert np.isfinite(hub.get_scalar('train/loss').current())
    # epoch 0 trains at the warmup lr (timm's scheduler as the official main.py steps it)
    [sched] = base.param_scheduler
    assert hub.get_scalar('train/lr').current() == pytest.approx(sched.warmup_lr_init)
    if distills:
        assert np.isfinite(hub.get_scalar('train/loss_dist').current())
    # validation of the EMA and (the official evaluation) of the raw model
    assert {'val/accuracy/top1', 'val/accuracy/top1_origin'} <= set(hub.log_scalars), sorted(hub.log_scalars)

    checkpoint = load_local_checkpoint(str(tmp_path / 'work' / 'epoch_1.pth'))
    parts = {k.split('.')[0] if k.startswith('backbone.') else '.'.join(k.split('.')[:2])
             for k in checkpoint['state_dict']}
    expected = {'backbone', 'head.norm', 'head.head'} | ({'head.head_dist'} if FAMILIES[family].classifier_distillation
                                                          else set())
    assert parts == expected
    assert 'ema_state_dict' in checkpoint  # mmengine's EMAHook: the raw weights there, the EMA under state_dict

    # and tools/test.py evaluates it (strict load of the whole classifier)
    test_options = {k: v for k, v in options.items() if k.endswith('_dataloader') or k.startswith('model.')}
    metrics = engine.test(engine.prepare_test_config(config, str(tmp_path / 'work' / 'epoch_1.pth'),
                                       work_dir=str(tmp_path / 'test'), cfg_options=test_options))
    assert {'accuracy/top1', 'accuracy/top5'} <= set(metrics)
