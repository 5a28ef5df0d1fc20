"""The command line: train / resume / test through tools/, and a 2-process gloo launch."""
import os
import subprocess
import sys

import pytest
import torch

from backbones.demo.configs import detection_config
from backbones.demo.dataset import make_dataset

from .conftest import ROOT, in_process_loaders

RETINANET = str(ROOT / 'configs' / 'detection' / 'retinanet_edgevit-xxs_fpn_8xb2-1x_coco.py')


@pytest.fixture(scope='module')
def tiny_config(tmp_path_factory):
    """RetinaNet EdgeViT-XXS on 8 built-in images of 64x64, deterministic, a fixed lr ramp."""
    tmp = tmp_path_factory.mktemp('engine')
    roots = make_dataset(str(tmp / 'data'), num_train=8, num_val=2, size=(64, 64), seed=1)
    cfg = detection_config(RETINANET, roots['coco'], 64, iters=4, batch_size=2, lr=1e-3)
    cfg.model.backbone.drop_path_rate = 0.0  # stochastic depth draws would differ after a resume
    cfg.param_scheduler = [dict(type='LinearLR', start_factor=0.1, by_epoch=False, begin=0, end=4)]
    cfg.default_hooks.checkpoint = dict(type='CheckpointHook', by_epoch=False, interval=2)
    cfg.randomness = dict(seed=0, deterministic=True)
    in_process_loaders(cfg)
    cfg.pop('work_dir', None)
    path = tmp / 'tiny_retinanet.py'
    cfg.dump(str(path))
    return str(path)


def _tool(*args, env=None, timeout=600):
    run = subprocess.run([sys.executable, *args], capture_output=True, text=True, cwd=str(ROOT),
                         timeout=timeout, env=env)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    return run


def _weights(path):
    return torch.load(path, map_location='cpu', weights_only=False)['state_dict']


@pytest.mark.slow
def test_resume_reaches_the_same_weights(tiny_config, tmp_path):
    straight, interrupted = tmp_path / 'straight', tmp_path / 'interrupted'
    _tool('tools/train.py', tiny_config, '--work-dir', str(straight))
    # "interrupted" after 2 iterations, then resumed from its checkpoint to iteration 4
    _tool('tools/train.py', tiny_config, '--work-dir', str(interrupted), '--cfg-options', 'train_cfg.max_iters=2')
    assert (interrupted / 'iter_2.pth').exists() and not (interrupted / 'iter_4.pth').exists()
    run = _tool('tools/train.py', tiny_config, '--work-dir', str(interrupted), '--resume')
    assert 'resumed' in (run.stdout + run.stderr).lower()
    a, b = _weights(straight / 'iter_4.pth'), _weights(interrupted / 'iter_4.pth')
    assert a.keys() == b.keys()
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=1e-5, atol=1e-6, msg=k)
    # and the interrupted run really differs from a fresh one at iteration 2
    assert any(not torch.equal(a[k], _weights(interrupted / 'iter_2.pth')[k]) for k in a if a[k].is_floating_point())
    # tools/test.py evaluates the checkpoint with the COCO metric and dumps predictions
    out = tmp_path / 'preds.pkl'
    run = _tool('tools/test.py', tiny_config, str(straight / 'iter_4.pth'), '--work-dir', str(tmp_path / 'test'),
                '--out', str(out))
    assert 'coco/bbox_mAP' in run.stdout + run.stderr and out.exists()


@pytest.mark.slow
def test_launcher_pytorch_two_cpu_processes(tiny_config, tmp_path):
    env = dict(os.environ, PYTHON=sys.executable, PORT='29517', OMP_NUM_THREADS='1')
    run = subprocess.run(['bash', 'tools/dist_train.sh', tiny_config, '2', '--work-dir', str(tmp_path / 'ddp'),
                          '--cfg-options', 'train_cfg.max_iters=2'],
                         capture_output=True, text=True, cwd=str(ROOT), env=env, timeout=600)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    assert (tmp_path / 'ddp' / 'iter_2.pth').exists()
    log = run.stdout + run.stderr
    assert 'initialised the gloo process group on CPU: rank 0 of 2' in log
    assert 'initialised the gloo process group on CPU: rank 1 of 2' in log


def test_bad_arguments_are_explained(tiny_config, tmp_path):
    from backbones.runtime.cli import UserError
    from backbones.runtime.engine import prepare_test_config, prepare_train_config
    with pytest.raises(FileNotFoundError, match='config file'):
        prepare_train_config('configs/detection/no_such.py')
    with pytest.raises(UserError, match='no such checkpoint'):
        prepare_train_config(tiny_config, resume=str(tmp_path / 'missing.pth'))
    with pytest.raises(UserError, match='.pkl'):
        prepare_test_config(tiny_config, tiny_config, out='preds.json')
    blocker = tmp_path / 'a_file'
    blocker.write_text('')
    with pytest.raises(UserError, match='is a file, not a folder'):
        prepare_train_config(tiny_config, work_dir=str(blocker / 'work'))


# ---------------------------------------------------------------------------- --amp
@pytest.fixture
def stand_in_wrappers():
    """Stand-ins for optim wrappers of other modules (as adaptive gradient clipping adds): a
    plain one with an ``Amp`` counterpart, one with a counterpart of another name, one with none."""
    from mmengine.optim import AmpOptimWrapper, OptimWrapper
    from mmengine.registry import OPTIM_WRAPPERS
    classes = {'StandInOptimWrapper': OptimWrapper, 'AmpStandInOptimWrapper': AmpOptimWrapper,
               'OddStandInWrapper': OptimWrapper, 'MixedOddStandInWrapper': AmpOptimWrapper,
               'LonelyOptimWrapper': OptimWrapper}
    for name, base in classes.items():
        OPTIM_WRAPPERS.register_module(name=name, module=type(name, (base,), {}), force=True)
    yield
    for name in classes:
        OPTIM_WRAPPERS._module_dict.pop(name, None)


def test_amp_counterparts_of_optim_wrappers(stand_in_wrappers, monkeypatch):
    from backbones.runtime import engine
    from backbones.runtime.cli import UserError
    assert engine.amp_optim_wrapper('OptimWrapper') == 'AmpOptimWrapper'
    assert engine.amp_optim_wrapper('OptimWrapper', 'mmdet') == 'AmpOptimWrapper'
    assert engine.amp_optim_wrapper('StandInOptimWrapper') == 'AmpStandInOptimWrapper'
    assert engine.amp_optim_wrapper('AmpStandInOptimWrapper') == 'AmpStandInOptimWrapper'
    with pytest.raises(UserError, match='OddStandInWrapper has no mixed-precision counterpart'):
        engine.amp_optim_wrapper('OddStandInWrapper')
    monkeypatch.setitem(engine.AMP_OPTIM_WRAPPERS, 'OddStandInWrapper', 'MixedOddStandInWrapper')
    assert engine.amp_optim_wrapper('OddStandInWrapper') == 'MixedOddStandInWrapper'
    assert engine.amp_optim_wrapper('MixedOddStandInWrapper') == 'MixedOddStandInWrapper'
    with pytest.raises(UserError, match=r'LonelyOptimWrapper has no .*AmpLonelyOptimWrapper is not registered'):
        engine.amp_optim_wrapper('LonelyOptimWrapper')


def test_amp_on_cuda_sets_float16_and_a_dynamic_loss_scale(tiny_config, stand_in_wrappers, monkeypatch, capsys):
    from backbones.runtime.engine import prepare_train_config
    monkeypatch.setattr(torch.cuda, 'is_available', lambda: True)  # only the config is made, nothing runs
    cfg = prepare_train_config(tiny_config, amp=True)
    assert (cfg.optim_wrapper.type, cfg.optim_wrapper.loss_scale, cfg.optim_wrapper.dtype) == (
        'AmpOptimWrapper', 'dynamic', 'float16')
    assert cfg.optim_wrapper.optimizer.type == 'AdamW'  # the rest of the wrapper stays
    assert '--amp: AmpOptimWrapper (from OptimWrapper), float16 autocast' in capsys.readouterr().err
    cfg = prepare_train_config(tiny_config, amp=True, cfg_options={'optim_wrapper.type': 'StandInOptimWrapper'})
    assert cfg.optim_wrapper.type == 'AmpStandInOptimWrapper'


def test_amp_without_cuda_is_refused_in_one_line(tiny_config, monkeypatch):
    from backbones.runtime.cli import UserError
    from backbones.runtime.engine import prepare_train_config
    monkeypatch.setattr(torch.cuda, 'is_available', lambda: False)
    with pytest.raises(UserError, match=r'--amp needs a CUDA device .*Drop --amp to train in float32'):
        prepare_train_config(tiny_config, amp=True)
