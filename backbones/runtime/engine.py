"""Training and testing with the mmengine Runner, for mmdet, mmseg and mmpretrain configs alike.

``tools/train.py`` and ``tools/test.py`` are thin command lines over these functions. What
they add to mmdet's / mmseg's own tools: the same flags for both toolboxes, ``--resume`` that
works on torch >= 2.6 (see :mod:`backbones.checkpoints.io`), and machines without a GPU (the gloo
backend, SyncBN as BN, float32 twins of AMP optim wrappers, DistributedDataParallel on CPU), so
``--launcher pytorch`` runs on CPU processes too.
"""
from __future__ import annotations

import os
import os.path as osp
import sys
from typing import Any, Dict, Optional

import torch
from mmengine.config import Config
from mmengine.logging import print_log

from .cli import UserError, check_writable_dir
from .finite_checkpoints import add_finite_checkpoint_hook
from .mmengine_setup import make_checkpoints_atomic, register_mmengine_loader
from .models import config_scope, load_config, warn_new_config_keys
from .resume import (add_random_state_hook, check_resume_checkpoint, check_resume_matches, choose_resume_checkpoint,
                     resume_seed)


def _replace_sync_bn(node: Any) -> int:
    """SyncBN -> BN in a config tree; returns how many were replaced."""
    count = 0
    if isinstance(node, dict):
        if node.get('type') in ('SyncBN', 'MMSyncBN'):
            node['type'] = 'BN'
            count += 1
        for value in node.values():
            count += _replace_sync_bn(value)
    elif isinstance(node, (list, tuple)):
        for value in node:
            count += _replace_sync_bn(value)
    return count


#: what an AMP optim wrapper takes beyond its float32 twin
_AMP_ONLY_KEYS = ('loss_scale', 'dtype', 'use_fsdp')


def _optim_wrappers():
    from mmengine.registry import OPTIM_WRAPPERS
    return OPTIM_WRAPPERS


def _float32_optim_wrapper(wrapper: Any) -> Optional[str]:
    """An AMP optim wrapper config turned into its float32 twin in place (``AmpX`` -> ``X``,
    the AMP-only keys dropped); returns the old type, or None when there was nothing to do."""
    old = wrapper.get('type', 'OptimWrapper') if isinstance(wrapper, dict) else None
    if not old or not old.startswith('Amp') or _optim_wrappers().get(old[3:]) is None:
        return None
    wrapper['type'] = old[3:]
    for key in _AMP_ONLY_KEYS:
        wrapper.pop(key, None)
    return old


def adapt_to_machine(cfg: Config) -> Config:
    """Run GPU configs on a machine without CUDA: gloo, plain BN (SyncBN layers and the
    Runner's ``sync_bn`` conversion off), float32 optim wrappers for AMP ones, CPU DDP, no
    cudnn flags."""
    if torch.cuda.is_available():
        return cfg
    env = cfg.setdefault('env_cfg', {})
    env.setdefault('dist_cfg', {})['backend'] = 'gloo'
    env['cudnn_benchmark'] = False
    replaced = _replace_sync_bn(cfg.model)
    if cfg.pop('sync_bn', None) is not None or replaced:
        print_log('no CUDA device: SyncBN replaced by BN', logger='current')
    amp = _float32_optim_wrapper(cfg.get('optim_wrapper'))
    if amp:
        print_log(f'no CUDA device: {amp} replaced by {cfg.optim_wrapper.type} (float32)', logger='current')
    if cfg.get('launcher', 'none') != 'none':
        wrapper = cfg.get('model_wrapper_cfg') or dict(type='MMDistributedDataParallel')
        wrapper['device_ids'] = None  # DDP on CPU modules takes no device ids
        cfg.model_wrapper_cfg = wrapper
    return cfg


#: mixed-precision counterparts of optim wrappers that the ``Amp`` + name rule does not find
AMP_OPTIM_WRAPPERS: Dict[str, str] = {}


def _optim_wrapper_registered(name: str, scope: Optional[str]) -> bool:
    """Whether ``name`` is an optim wrapper in mmengine's registry or in ``scope``'s."""
    from mmengine.registry import OPTIM_WRAPPERS
    return OPTIM_WRAPPERS.get(name) is not None or (scope is not None and
                                                      OPTIM_WRAPPERS.get(f'{scope}.{name}') is not None)


def amp_optim_wrapper(wrapper_type: str, scope: Optional[str] = None) -> str:
    """The mixed-precision counterpart of an optim wrapper type: ``X`` -> ``AmpX`` when that is
    registered, as mmengine's ``AmpOptimWrapper`` is to ``OptimWrapper`` (``AGCOptimWrapper``
    -> ``AmpAGCOptimWrapper``), else the entry of :data:`AMP_OPTIM_WRAPPERS`; an ``Amp...``
    type is its own counterpart. Raises a UserError for a wrapper that has none."""
    if wrapper_type.startswith('Amp') or wrapper_type in AMP_OPTIM_WRAPPERS.values():
        return wrapper_type
    for candidate in ('Amp' + wrapper_type, AMP_OPTIM_WRAPPERS.get(wrapper_type)):
        if candidate and _optim_wrapper_registered(candidate, scope):
            return candidate
    raise UserError(f'--amp: the optim wrapper {wrapper_type} has no mixed-precision counterpart (Amp{wrapper_type} '
                    'is not registered); drop --amp, or register one (backbones.runtime.engine.AMP_OPTIM_WRAPPERS '
                    'maps other names)')


def use_amp(cfg: Config) -> Config:
    """Mixed precision on CUDA (``--amp``): the optim wrapper's ``Amp`` counterpart, float16
    autocast with a dynamic loss scale. A machine without CUDA is refused: mmengine's AMP
    wrappers need a GPU, and mmcv's CPU kernels (RoIAlign) take no bfloat16."""
    if not torch.cuda.is_available():
        raise UserError('--amp needs a CUDA device (mmengine\'s AmpOptimWrapper, float16); this machine has none. '
                        'Drop --amp to train in float32.')
    wrapper = cfg.optim_wrapper
    old = wrapper.get('type', 'OptimWrapper')
    wrapper.type = amp_optim_wrapper(old, cfg.get('default_scope'))
    wrapper.setdefault('loss_scale', 'dynamic')  # a config's own loss scale stays
    wrapper.dtype = 'float16'
    _console(f'--amp: {wrapper.type} (from {old}), float16 autocast with a dynamic loss scale')
    return cfg


def prepare_train_config(config: str, work_dir: Optional[str] = None,
                         cfg_options: Optional[Dict[str, Any]] = None, launcher: str = 'none',
                         resume: Optional[str] = None, amp: bool = False,
                         auto_scale_lr: bool = False) -> Config:
    """The config a training run uses, with the command line's settings applied.

    Args:
        resume: ``'auto'`` resumes from the latest checkpoint in ``work_dir``; a path resumes
            from that checkpoint; None starts anew.
        amp: mixed precision (:func:`use_amp`).
        auto_scale_lr: scale the lr linearly from the config's ``auto_scale_lr.base_batch_size``
            to the real total batch (mmdet's ``--auto-scale-lr``); False keeps the config's
            own setting.
    """
    cfg = _load(config, cfg_options, launcher, work_dir)
    if amp:
        use_amp(cfg)
    if auto_scale_lr:
        if 'auto_scale_lr' not in cfg or 'base_batch_size' not in cfg.auto_scale_lr:
            raise UserError(f'--auto-scale-lr: {config} has no auto_scale_lr.base_batch_size to scale the lr from; '
                            'add auto_scale_lr = dict(enable=False, base_batch_size=TOTAL_BATCH) to it')
        cfg.auto_scale_lr.enable = True
    if resume == 'auto':
        path, skipped = choose_resume_checkpoint(cfg.work_dir)
        for line in skipped:
            _console(line)
        if path is None:
            _console(f'--resume: no usable training checkpoint in {cfg.work_dir}; training from scratch')
        else:
            _console(f'--resume: continuing from {path}')
        cfg.resume, cfg.load_from = path is not None, path
    elif resume is not None:
        if not osp.isfile(resume):
            raise UserError(f'--resume {resume}: no such checkpoint file')
        check_resume_checkpoint(resume)
        cfg.resume = True
        cfg.load_from = resume
    return adapt_to_machine(cfg)


def _load(config: str, cfg_options: Optional[Dict[str, Any]], launcher: str, work_dir: Optional[str]) -> Config:
    """The config with the command line's overrides, launcher and work dir (checked writable)."""
    warn_new_config_keys(config, cfg_options)
    cfg = load_config(config, cfg_options)
    cfg.launcher = launcher
    if work_dir is not None:
        cfg.work_dir = work_dir
    elif cfg.get('work_dir') is None:
        cfg.work_dir = osp.join('./work_dirs', osp.splitext(osp.basename(config))[0])
    if os.environ.get('RANK', '0') == '0':
        check_writable_dir(cfg.work_dir, '--work-dir')
    return cfg


def _console(message: str) -> None:
    """A plain line on stderr (rank 0 only), before the Runner's logger exists."""
    if os.environ.get('RANK', '0') == '0':
        print(message, file=sys.stderr, flush=True)


def _init_cpu_process_group(cfg: Config) -> None:
    """mmengine's ``init_dist`` calls ``torch.cuda.set_device`` whatever the backend; without
    CUDA we start the (gloo) process group ourselves from torchrun's environment, and the
    Runner then uses it as is."""
    import torch.distributed as dist
    if torch.cuda.is_available() or cfg.get('launcher', 'none') != 'pytorch' or dist.is_initialized():
        return
    backend = cfg.get('env_cfg', {}).get('dist_cfg', {}).get('backend', 'gloo')
    dist.init_process_group(backend=backend)
    print_log(f'initialised the {backend} process group on CPU: rank {dist.get_rank()} of '
              f'{dist.get_world_size()}', logger='current')


def build_runner(cfg: Config):
    """The mmengine Runner for ``cfg`` (registries of the config's default scope)."""
    register_mmengine_loader()
    _init_cpu_process_group(cfg)
    add_random_state_hook(cfg)  # exact resume (backbones.runtime.resume)
    add_finite_checkpoint_hook(cfg)  # no checkpoint of NaN weights
    resume_seed(cfg)
    from mmengine.registry import RUNNERS
    from mmengine.runner import Runner
    runner = RUNNERS.build(cfg) if 'runner_type' in cfg else Runner.from_cfg(cfg)
    make_checkpoints_atomic(runner)  # a killed save leaves no truncated iter_N.pth
    return runner


def train(cfg: Config):
    """Train with ``cfg``; returns the runner (its model holds the final weights). A resumed
    run first checks that the checkpoint holds this model's weights."""
    runner = build_runner(cfg)
    if cfg.get('resume') and cfg.get('load_from'):
        from ..checkpoints.io import load_local_checkpoint
        check_resume_matches(load_local_checkpoint(cfg.load_from, map_location='cpu'), cfg.load_from, runner.model)
    runner.train()
    return runner


def prepare_test_config(config: str, checkpoint: str, work_dir: Optional[str] = None,
                        cfg_options: Optional[Dict[str, Any]] = None, launcher: str = 'none',
                        out: Optional[str] = None, show_dir: Optional[str] = None) -> Config:
    """The config a test run uses: ``checkpoint`` loaded, predictions dumped to ``out``
    (a .pkl), drawn predictions written under ``show_dir``."""
    if not osp.isfile(checkpoint) and '://' not in checkpoint:
        raise UserError(f'checkpoint {checkpoint!r} does not exist')
    cfg = _load(config, cfg_options, launcher, work_dir)
    cfg.load_from = checkpoint
    cfg.resume = False
    if out is not None:
        if not out.endswith(('.pkl', '.pickle')):
            raise UserError(f'--out {out}: the predictions are dumped as a pickle; give a .pkl file name')
        if osp.isdir(out):
            raise UserError(f'--out {out}: a folder; give a .pkl file name')
        cfg.test_evaluator = [cfg.test_evaluator] if isinstance(cfg.test_evaluator, dict) else list(
            cfg.test_evaluator)
        cfg.test_evaluator.append(dict(type='DumpResults', out_file_path=out))
    if show_dir is not None and config_scope(cfg) == 'mmpretrain':
        hooks = cfg.setdefault('default_hooks', {})
        hooks['visualization'] = dict(type='VisualizationHook', enable=True, interval=1, show=False, out_dir=show_dir)
    elif show_dir is not None:
        vis_hook = 'DetVisualizationHook' if config_scope(cfg) == 'mmdet' else 'SegVisualizationHook'
        hooks = cfg.setdefault('default_hooks', {})
        hooks['visualization'] = dict(type=vis_hook, draw=True, interval=1, show=False,
                                      **({'test_out_dir': show_dir} if vis_hook == 'DetVisualizationHook'
                                         else {}))
        if vis_hook == 'SegVisualizationHook':
            cfg.visualizer['save_dir'] = show_dir
    return adapt_to_machine(cfg)


def test(cfg: Config, partial: bool = False) -> Dict[str, float]:
    """Evaluate ``cfg.load_from`` on the test set; returns the metrics.

    The checkpoint is loaded strictly (mmengine's Runner would load it non-strictly and
    evaluate whatever stayed random): one of another model is refused, unless ``partial``,
    which loads what fits and lists what did not (see ``load_model_checkpoint``).
    """
    from ..checkpoints.loading import load_model_checkpoint
    runner = build_runner(cfg)
    if cfg.get('load_from'):
        load_model_checkpoint(runner.model, cfg.load_from, partial=partial)
        runner._has_loaded = True  # the Runner's own load_or_resume would load it again, non-strictly
    return runner.test()
