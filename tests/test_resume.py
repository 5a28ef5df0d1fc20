"""Exact resume with the shipped configs' randomness on (backbones.runtime.resume.RandomStateHook).

Each run trains the shipped model and augmentation at a tiny size in this process: once
uninterrupted, once interrupted half-way and resumed by a fresh Runner; the final weights
must be bit-identical.
"""
import pickle
import random

import numpy as np
import pytest
import torch

from backbones.demo.configs import detection_config, segmentation_config
from backbones.runtime.engine import build_runner, prepare_train_config
from backbones.runtime.resume import CHECKPOINT_KEY, get_rng_state, set_rng_state
from backbones.demo.dataset import make_dataset

from .conftest import ROOT

SEG_CONFIG = str(ROOT / 'configs' / 'segmentation' / 'fpn_edgevit-xxs_8xb4-40k_ade20k-512x512.py')
RETINANET = str(ROOT / 'configs' / 'detection' / 'retinanet_edgevit-xxs_fpn_8xb2-1x_coco.py')
SEED = 7


@pytest.fixture(scope='module')
def data_roots(tmp_path_factory):
    return make_dataset(str(tmp_path_factory.mktemp('resume') / 'data'), num_train=4, num_val=1, size=(64, 64),
                        seed=3)


def _common(cfg, work_dir, num_workers, resume, tag):
    cfg.train_dataloader.num_workers = num_workers
    cfg.train_dataloader.persistent_workers = num_workers > 0
    cfg.default_hooks.logger = dict(type='LoggerHook', interval=1)
    # the resumed run's config sets no seed (as shipped, where mmengine draws one): it must
    # continue with the seed the checkpoint was trained with
    cfg.randomness = dict(seed=None if resume else SEED)
    cfg.resume = resume
    cfg.experiment_name = f'{work_dir.name}_{tag}_{resume}'  # a fresh message hub and logger per Runner
    return cfg


def _seg_cfg(roots, work_dir, num_workers, max_iters, resume=False):
    """The shipped EdgeViT-XXS Semantic FPN on 64x64 built-in images (32x32 crops), 2
    iterations, randomness as shipped: drop path 0.1, decode-head dropout 0.1, random resize,
    crop, flip and photometric distortion."""
    cfg = segmentation_config(SEG_CONFIG, roots['ade'], 32, 2, batch_size=2, lr=1e-3, work_dir=str(work_dir))
    assert cfg.model.backbone.drop_path_rate > 0 and cfg.model.decode_head.dropout_ratio > 0
    assert {'RandomResize', 'RandomCrop', 'RandomFlip', 'PhotoMetricDistortion'} <= {
        t['type'] for t in cfg.train_dataloader.dataset.pipeline}
    cfg.train_cfg.max_iters = max_iters
    cfg.default_hooks.checkpoint = dict(type='CheckpointHook', by_epoch=False, interval=1)
    return _common(cfg, work_dir, num_workers, resume, max_iters)


def _det_cfg(roots, work_dir, num_workers, max_epochs, resume=False):
    """The shipped RetinaNet EdgeViT-XXS (drop path 0.1, random flip) on 64x64 built-in
    images with mmdet's epoch loop: 2 epochs of 2 iterations, a checkpoint per epoch."""
    cfg = detection_config(RETINANET, roots['coco'], 64, 4, batch_size=2, lr=1e-3, work_dir=str(work_dir))
    assert cfg.model.backbone.drop_path_rate > 0
    cfg.train_cfg = dict(type='EpochBasedTrainLoop', max_epochs=max_epochs, val_interval=10)
    cfg.default_hooks.checkpoint = dict(type='CheckpointHook', by_epoch=True, interval=1)
    return _common(cfg, work_dir, num_workers, resume, max_epochs)


def _train(cfg):
    runner = build_runner(cfg)
    runner.train()
    return {k: v.detach().clone() for k, v in runner.model.state_dict().items()}


def _assert_resume_is_exact(make_cfg, roots, tmp_path, num_workers, total, checkpoint):
    straight = _train(make_cfg(roots, tmp_path / 'straight', num_workers, total))
    _train(make_cfg(roots, tmp_path / 'interrupted', num_workers, total // 2))
    half = torch.load(tmp_path / 'interrupted' / checkpoint, map_location='cpu', weights_only=False)
    assert half['meta']['seed'] == SEED and CHECKPOINT_KEY in half
    resumed = _train(make_cfg(roots, tmp_path / 'interrupted', num_workers, total, resume=True))
    assert straight.keys() == resumed.keys()
    differ = [k for k in straight if not torch.equal(straight[k], resumed[k])]
    assert not differ, f'{len(differ)} tensors differ after resume, e.g. {differ[:5]}'
    # and the run did move after the checkpoint
    assert any(not torch.equal(v, straight[k]) for k, v in half['state_dict'].items() if v.is_floating_point())


@pytest.mark.slow
@pytest.mark.parametrize('num_workers', [0, 1])
def test_resumed_segmentation_run_is_bit_identical(data_roots, tmp_path, num_workers):
    """Iteration loop: mmengine re-reads the trained batches, the hook restores the states after."""
    _assert_resume_is_exact(_seg_cfg, data_roots, tmp_path, num_workers, 2, 'iter_1.pth')


@pytest.mark.slow
@pytest.mark.parametrize('num_workers', [0, 1])
def test_resumed_epoch_based_detection_run_is_bit_identical(data_roots, tmp_path, num_workers):
    """Epoch loop with persistent workers: the workers are reseeded per epoch."""
    _assert_resume_is_exact(_det_cfg, data_roots, tmp_path, num_workers, 2, 'epoch_1.pth')


def test_random_states_round_trip_through_a_restricted_unpickler(tmp_path):
    torch.manual_seed(1), np.random.seed(2), random.seed(3)
    np.random.standard_normal()  # a cached gaussian in numpy's state
    state = get_rng_state()
    expected = (torch.rand(3), np.random.rand(3), np.random.standard_normal(), random.random())
    path = tmp_path / 'states.pth'
    torch.save({CHECKPOINT_KEY: state}, path)
    loaded = torch.load(path, map_location='cpu', weights_only=True)[CHECKPOINT_KEY]  # no pickled classes
    torch.manual_seed(9), np.random.seed(9), random.seed(9)
    set_rng_state(loaded)
    again = (torch.rand(3), np.random.rand(3), np.random.standard_normal(), random.random())
    assert torch.equal(expected[0], again[0]) and np.array_equal(expected[1], again[1])
    assert expected[2:] == again[2:]
    pickle.dumps(state)


def test_resume_with_nothing_to_resume_says_so(data_roots, tmp_path, capsys):
    config = tmp_path / 'seg.py'
    _seg_cfg(data_roots, tmp_path / 'empty', 0, 2).dump(str(config))
    cfg = prepare_train_config(str(config), work_dir=str(tmp_path / 'empty'), resume='auto')
    err = capsys.readouterr().err
    assert f'--resume: no usable training checkpoint in {tmp_path / "empty"}; training from scratch' in err
    assert not cfg.resume
    # an empty (truncated) checkpoint there is passed over, with a line that says so
    (tmp_path / 'empty' / 'iter_1.pth').write_bytes(b'')
    (tmp_path / 'empty' / 'last_checkpoint').write_text(str(tmp_path / 'empty' / 'iter_1.pth'))
    assert not prepare_train_config(str(config), work_dir=str(tmp_path / 'empty'), resume='auto').resume
    err = capsys.readouterr().err
    assert f'passing over {tmp_path / "empty" / "iter_1.pth"}' in err and 'empty' in err


def test_validation_leaves_the_training_random_streams_alone():
    from backbones.runtime.resume import RandomStateHook
    hook = RandomStateHook()
    torch.manual_seed(3), np.random.seed(3), random.seed(3)
    expected = (torch.rand(2), np.random.rand(2), random.random())
    torch.manual_seed(3), np.random.seed(3), random.seed(3)
    hook.before_val(None)
    torch.rand(5), np.random.rand(5), random.random()  # what a validation draws
    checkpoint = {}
    hook.before_save_checkpoint(None, checkpoint)  # a save_best checkpoint during validation
    hook.after_val(None)
    assert (torch.equal(torch.rand(2), expected[0]) and np.array_equal(np.random.rand(2), expected[1])
            and random.random() == expected[2])
    torch.manual_seed(3)
    assert torch.equal(torch.get_rng_state(), checkpoint[CHECKPOINT_KEY]['torch'])


def test_load_from_restores_no_random_states():
    """after_load_checkpoint runs for ``load_from`` (fine-tuning) too: nothing is restored then."""
    from types import SimpleNamespace

    from backbones.runtime.resume import RandomStateHook
    torch.manual_seed(5)
    saved = get_rng_state()
    torch.manual_seed(6)
    expected = torch.rand(3)
    torch.manual_seed(6)
    hook = RandomStateHook()
    runner = SimpleNamespace(_resume=False, train_loop=SimpleNamespace(iter=0, epoch=0))
    hook.after_load_checkpoint(runner, {CHECKPOINT_KEY: saved, 'meta': dict(iter=4, epoch=0)})
    hook.before_train(runner)  # the loop starts at 0, the checkpoint was saved at 4: a load_from
    assert torch.equal(torch.rand(3), expected)
