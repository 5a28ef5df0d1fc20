"""TimmCosineLR gives, epoch for epoch, the lr of timm's CosineLRScheduler driven as the official
main.py drives it (built with the recipe's arguments, ``lr_scheduler.step(epoch)`` after each
epoch), for the schedules the configs ship and through mmengine's Runner."""
import glob
import math
import os.path as osp

import pytest
import torch
import torch.nn as nn
from timm.scheduler import CosineLRScheduler

pytest.importorskip('mmpretrain')
from backbones.pretrain.scheduler import TimmCosineLR  # noqa: E402
from backbones.runtime.models import load_config  # noqa: E402

from .conftest import ROOT  # noqa: E402

#: one config per family base (the schedules differ in the warmup lr)
FAMILY_CONFIGS = sorted({osp.basename(c).split('-')[0]: c
                         for c in glob.glob(str(ROOT / 'configs' / 'classification' / '*.py'))}.values())


def _optimizer(lrs=(2e-3, 1e-3)):
    """Two parameter groups (decay / no decay) with their own lr, as AdamW gets them."""
    return torch.optim.AdamW([{'params': [nn.Parameter(torch.zeros(2))], 'lr': lr} for lr in lrs])


def official_lrs(epochs: int, warmup_t: int, warmup_lr_init: float, lr_min: float, lrs=(2e-3, 1e-3)):
    """The lr of each group in each epoch, as the official main.py trains: timm's scheduler built
    as timm's create_scheduler builds it for --sched cosine, read while the epoch trains, then
    stepped with the epoch's index."""
    optimizer = _optimizer(lrs)
    scheduler = CosineLRScheduler(optimizer, t_initial=epochs, lr_min=lr_min, warmup_lr_init=warmup_lr_init,
                                  warmup_t=warmup_t, cycle_limit=1, cycle_decay=0.1, t_in_epochs=True,
                                  warmup_prefix=False, noise_range_t=None)
    out = []
    for epoch in range(epochs):
        out.append([g['lr'] for g in optimizer.param_groups])
        scheduler.step(epoch)
    return out


def mmengine_lrs(scheduler_cfg: dict, epochs: int, lrs=(2e-3, 1e-3)):
    """The lr of each group in each epoch with our scheduler, stepped after every epoch as
    mmengine's ParamSchedulerHook steps by-epoch schedulers."""
    from mmengine.registry import PARAM_SCHEDULERS
    optimizer = _optimizer(lrs)
    cfg = dict(scheduler_cfg, optimizer=optimizer)
    cfg.setdefault('end', epochs)  # the Runner's default: train_cfg.max_epochs
    scheduler = PARAM_SCHEDULERS.build(cfg)
    out = []
    for _ in range(epochs):
        out.append([g['lr'] for g in optimizer.param_groups])
        optimizer.step()
        scheduler.step()
    return out


@pytest.mark.parametrize('config', FAMILY_CONFIGS, ids=lambda p: p.split('/')[-1][:-3])
def test_the_configs_schedule_is_the_official_lr_epoch_for_epoch(config):
    cfg = load_config(config)
    [sched] = cfg.param_scheduler
    epochs = cfg.train_cfg.max_epochs
    assert sched.type == 'TimmCosineLR' and sched.by_epoch
    expected = official_lrs(epochs, sched.warmup_t, sched.warmup_lr_init, sched.lr_min)
    got = mmengine_lrs(dict(sched), epochs)
    assert len(got) == len(expected) == 300
    for epoch, (g, e) in enumerate(zip(got, expected)):
        assert g == pytest.approx(e, rel=1e-12, abs=0), epoch
    # the official stepping's marks: epochs 0 and 1 both at the warmup lr, the cosine over all 300
    assert got[0] == got[1] == [sched.warmup_lr_init] * 2
    assert got[6][0] == pytest.approx(sched.lr_min + (2e-3 - sched.lr_min) * (1 + math.cos(math.pi * 5 / 300)) / 2)


@pytest.mark.parametrize('warmup_t, warmup_lr_init, epochs', [(0, 0.0, 7), (3, 1e-6, 4), (2, 1e-4, 9)])
def test_edge_cases_match_timm(warmup_t, warmup_lr_init, epochs):
    """No warmup (epoch 0 at the base lr), a warmup as long as the run, and epochs past t_initial."""
    sched = dict(type='TimmCosineLR', t_initial=6, warmup_t=warmup_t, warmup_lr_init=warmup_lr_init, lr_min=1e-5)
    expected = official_lrs(6, warmup_t, warmup_lr_init, 1e-5)
    got = mmengine_lrs(sched, min(epochs, 6))
    for g, e in zip(got, expected):
        assert g == pytest.approx(e, rel=1e-12, abs=0)


def test_mmengine_linear_warmup_and_cosine_would_not_be_the_official_schedule():
    """Why the package has its own scheduler: mmengine's LinearLR + CosineAnnealingLR, set up
    with the same numbers, differ from the official lr (for example in epoch 1)."""
    schedulers = [dict(type='LinearLR', start_factor=1e-5 / 1e-3, by_epoch=True, begin=0, end=5),
                  dict(type='CosineAnnealingLR', eta_min=1e-5, by_epoch=True, begin=5, end=300)]
    from mmengine.registry import PARAM_SCHEDULERS
    optimizer = _optimizer((1e-3, ))
    built = [PARAM_SCHEDULERS.build(dict(s, optimizer=optimizer)) for s in schedulers]
    got = []
    for _ in range(300):
        got.append(optimizer.param_groups[0]['lr'])
        optimizer.step()
        for s in built:
            s.step()
    expected = [lrs[0] for lrs in official_lrs(300, 5, 1e-5, 1e-5, lrs=(1e-3, ))]
    assert got[1] != pytest.approx(expected[1]) and got[150] != pytest.approx(expected[150], rel=1e-3)


def test_the_runner_trains_each_epoch_at_the_official_lr(tmp_path):
    """Through mmengine's Runner: the lr each epoch's iterations see."""
    from mmengine.hooks import Hook
    from mmengine.model import BaseModel
    from mmengine.registry import DefaultScope
    from mmengine.runner import Runner

    class Toy(BaseModel):
        def __init__(self):
            super().__init__()
            self.linear = nn.Linear(2, 1)

        def forward(self, inputs, mode='loss'):
            return dict(loss=self.linear(inputs).pow(2).mean())

    class Record(Hook):
        def __init__(self):
            self.lrs = []

        def before_train_iter(self, runner, batch_idx, data_batch=None):
            if batch_idx == 0:
                self.lrs.append(runner.optim_wrapper.get_lr()['lr'][0])

    record = Record()
    epochs = 8
    # the runner's scope ends with the test: later tests build from mmpretrain's registry
    with DefaultScope.overwrite_default_scope('mmengine'):
        runner = Runner(model=Toy(), work_dir=str(tmp_path),
                        train_dataloader=dict(dataset=[dict(inputs=torch.ones(2))] * 4, batch_size=2, num_workers=0,
                                              sampler=dict(type='DefaultSampler', shuffle=False),
                                              collate_fn=dict(type='default_collate')),
                        optim_wrapper=dict(optimizer=dict(type='AdamW', lr=3e-3)),
                        param_scheduler=[dict(type='TimmCosineLR', warmup_t=3, warmup_lr_init=1e-6, lr_min=1e-5,
                                              by_epoch=True)],
                        train_cfg=dict(by_epoch=True, max_epochs=epochs), custom_hooks=[record],
                        default_hooks=dict(checkpoint=None, logger=None), default_scope='mmengine',
                        log_level='WARNING')
        runner.train()
    expected = [lrs[0] for lrs in official_lrs(epochs, 3, 1e-6, 1e-5, lrs=(3e-3, ))]
    assert record.lrs == pytest.approx(expected, rel=1e-12, abs=0)


@pytest.mark.parametrize('kwargs, message', [
    (dict(by_epoch=False, t_initial=5), 'by_epoch=True'),
    (dict(), 'give t_initial'),
    (dict(t_initial=0), 't_initial must be a whole number of epochs >= 1'),
    (dict(t_initial=5, warmup_t=1.5), 'warmup_t must be'),
    (dict(t_initial=5, lr_min=-1), 'lr_min must be'),
])
def test_bad_arguments_are_named(kwargs, message):
    with pytest.raises(ValueError, match=message):
        TimmCosineLR(_optimizer(), **kwargs)
