"""tools/train.py and tools/test.py as a user meets them: every user error is one line on
stderr with exit status 2 (--debug shows the traceback); --cfg-options typos are named;
--resume says what a file is when it is not a training checkpoint of this model, and passes
over a truncated newest checkpoint, saying which it used."""
import os
import subprocess
import sys

import pytest
import torch

from backbones.runtime.cli import UserError
from backbones.runtime.engine import prepare_train_config, train

from .conftest import ROOT, load_tool, usage_error
from .training_helpers import toy_config


@pytest.fixture
def toy(tmp_path):
    """A config file training the toy model of training_helpers (a real Runner, in a second)."""
    cfg = toy_config(str(tmp_path / 'work'), max_iters=3)
    cfg.custom_imports = dict(imports=['tests.training_helpers'], allow_failed_imports=False)
    path = tmp_path / 'toy.py'
    cfg.dump(str(path))
    return str(path)


def _cli(*args, env=None):
    return subprocess.run([sys.executable, 'tools/train.py', *map(str, args)], capture_output=True, text=True,
                          cwd=str(ROOT), timeout=600, env=dict(os.environ, **(env or {})))


def test_user_errors_are_one_line_and_debug_shows_the_traceback(toy, tmp_path):
    blocker = tmp_path / 'a_file'
    blocker.write_text('')
    run = _cli(toy, '--work-dir', blocker / 'work')
    assert run.returncode == 2 and 'Traceback' not in run.stderr
    assert run.stderr.strip().splitlines()[-1] == (f'error: --work-dir {blocker / "work"}: cannot write there '
                                                   f'({blocker} is a file, not a folder); choose a folder you can write')
    run = _cli(toy, '--cfg-options', 'model.arhc=xs', '--work-dir', tmp_path / 'w')
    assert run.returncode == 2 and 'Traceback' not in run.stderr
    assert '--cfg-options model.arhc: not in' in run.stderr  # the misspelt key, named before the build fails
    assert run.stderr.strip().splitlines()[-1].startswith('error: ') and 'arhc' in run.stderr.strip().splitlines()[-1]
    run = _cli(toy, '--work-dir', blocker / 'work', '--debug')
    assert run.returncode != 0 and 'Traceback' in run.stderr and 'UserError' in run.stderr


def test_malformed_cfg_options_are_usage_errors(toy, capsys):
    main = load_tool('train').main
    assert 'an option is KEY=VALUE' in usage_error(main, [toy, '--cfg-options', 'train_cfg.max_iters'], capsys)
    assert 'unbalanced brackets' in usage_error(main, [toy, '--cfg-options', 'a.b=[1,2'], capsys)
    assert 'not a config key' in usage_error(main, [toy, '--cfg-options', '=3'], capsys)


def _trained(tmp_path, toy, iters=3):
    cfg = prepare_train_config(toy, work_dir=str(tmp_path / 'work'))
    cfg.train_cfg.max_iters = iters
    train(cfg)
    return tmp_path / 'work'


def test_resume_passes_over_a_truncated_newest_checkpoint(toy, tmp_path, capsys):
    work = _trained(tmp_path, toy)
    newest = work / 'iter_3.pth'
    newest.write_bytes(newest.read_bytes()[:1000])  # killed mid-copy, a full disk, ...
    capsys.readouterr()
    cfg = prepare_train_config(toy, work_dir=str(work), resume='auto')
    err = capsys.readouterr().err
    assert cfg.resume and cfg.load_from == str(work / 'iter_2.pth')
    assert f'passing over {newest}' in err and f'--resume: continuing from {work / "iter_2.pth"}' in err
    # named explicitly, it is refused, and the usable one beside it offered
    with pytest.raises(UserError, match=f'truncated or corrupt.*--resume {work / "iter_2.pth"}'):
        prepare_train_config(toy, work_dir=str(work), resume=str(newest))


def test_resume_names_what_a_file_is_when_it_is_not_a_training_checkpoint(toy, tmp_path):
    from backbones import EdgeViT
    torch.save(EdgeViT('xxs').state_dict(), tmp_path / 'backbone.pth')
    with pytest.raises(UserError, match='a backbone or classifier checkpoint .layout: edgevit.* init_cfg'):
        prepare_train_config(toy, work_dir=str(tmp_path / 'w'), resume=str(tmp_path / 'backbone.pth'))
    torch.save({'state_dict': {'backbone.' + k: v for k, v in EdgeViT('xxs').state_dict().items()}},
               tmp_path / 'whole.pth')
    with pytest.raises(UserError, match='a whole-model checkpoint without training state .* load_from'):
        prepare_train_config(toy, work_dir=str(tmp_path / 'w'), resume=str(tmp_path / 'whole.pth'))


def test_resuming_another_models_training_checkpoint_names_it(toy, tmp_path):
    work = _trained(tmp_path, toy, iters=1)
    checkpoint = torch.load(work / 'iter_1.pth', map_location='cpu', weights_only=False)
    checkpoint['state_dict'] = {'linear.weight': torch.zeros(3, 4), 'other.bias': torch.zeros(2)}
    torch.save(checkpoint, tmp_path / 'other.pth')
    cfg = prepare_train_config(toy, work_dir=str(tmp_path / 'w'), resume=str(tmp_path / 'other.pth'))
    with pytest.raises(UserError, match="a training checkpoint of another model .*shapes differ .e.g. linear.weight"):
        train(cfg)


def test_a_diverged_run_writes_no_checkpoint_and_keeps_the_last_good_one(toy, tmp_path):
    """NaN weights at iteration 2: its checkpoint is not written, iter_1.pth stays (even with
    max_keep_ckpts=1), and the error names it."""
    from backbones.runtime.finite_checkpoints import TrainingDivergedError
    cfg = prepare_train_config(toy, work_dir=str(tmp_path / 'work'))
    cfg.default_hooks.checkpoint.max_keep_ckpts = 1
    cfg.custom_hooks = [dict(type='EdgeformersPoisonHook', at_iter=2)]
    with pytest.raises(TrainingDivergedError, match='iteration 2 .*NaN or infinite.*iter_1.pth, is kept'):
        train(cfg)
    assert sorted(p.name for p in (tmp_path / 'work').glob('*.pth')) == ['iter_1.pth']
    weights = torch.load(tmp_path / 'work' / 'iter_1.pth', map_location='cpu', weights_only=False)['state_dict']
    assert all(torch.isfinite(v).all() for v in weights.values() if v.is_floating_point())


def test_a_failed_save_keeps_the_previous_checkpoint_even_with_max_keep_ckpts_1(toy, tmp_path):
    """mmengine removes the oldest checkpoint before writing the new one; here it is removed
    only after, so a save that fails leaves the last good checkpoint in place."""
    cfg = prepare_train_config(toy, work_dir=str(tmp_path / 'work'))
    cfg.default_hooks.checkpoint.max_keep_ckpts = 1
    cfg.custom_hooks = [dict(type='EdgeformersFailingSaveHook', at_iter=2)]
    with pytest.raises(OSError, match='No space left'):
        train(cfg)
    assert sorted(p.name for p in (tmp_path / 'work').glob('*.pth')) == ['iter_1.pth']
    cfg = prepare_train_config(toy, work_dir=str(tmp_path / 'work2'))
    cfg.default_hooks.checkpoint.max_keep_ckpts = 1
    train(cfg)  # and without failures, one checkpoint is kept, the newest
    assert sorted(p.name for p in (tmp_path / 'work2').glob('*.pth')) == ['iter_3.pth']
