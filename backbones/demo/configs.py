"""The project's configs adapted to the built-in dataset: its data root, an image size, a
short iteration schedule, from-scratch backbone settings and this machine."""
from __future__ import annotations

from typing import Optional

from mmengine.config import Config

from ..registry import get_family
from ..runtime.engine import adapt_to_machine
from ..runtime.models import load_config


TASKS = {'mmdet': 'detection', 'mmseg': 'segmentation', 'mmpretrain': 'classification'}


def config_task(config: str) -> str:
    """'detection' or 'segmentation': the toolbox a config is written for (its default_scope)."""
    scope = load_config(config).get('default_scope')
    if scope not in TASKS:
        raise ValueError(f'{config}: default_scope is {scope!r}, not mmdet (detection), mmseg (segmentation) or '
                         'mmpretrain (classification); use a config from configs/')
    return TASKS[scope]


def check_config_task(config: str, task: str, flag: str) -> None:
    """Raise a ValueError when ``config`` is not a ``task`` config, naming the option it belongs to."""
    found = config_task(config)
    if found != task:
        other = '--seg-config' if flag == '--det-config' else '--det-config'
        raise ValueError(f'{flag} {config} is a {found} config (for {other}); give {flag} a config from '
                         f'configs/{task}/')


def _short_schedule(cfg: Config, iters: int, lr: float, warmup: int) -> None:
    """Iteration-based training of ``iters`` steps: linear warm-up, cosine decay, evaluation
    and a checkpoint at the end."""
    # evaluated once after training (runner.test); mmengine's iteration loop would also
    # validate at its last iteration
    cfg.train_cfg = dict(type='IterBasedTrainLoop', max_iters=iters)
    cfg.val_cfg = cfg.val_dataloader = cfg.val_evaluator = None
    cfg.optim_wrapper.optimizer.lr = lr
    cfg.optim_wrapper.clip_grad = dict(max_norm=10.0)  # from-scratch training: tame early spikes
    warmup = min(warmup, max(iters // 4, 1))
    cfg.param_scheduler = [dict(type='LinearLR', start_factor=0.01, by_epoch=False, begin=0, end=warmup)]
    if iters > warmup:
        cfg.param_scheduler.append(dict(type='CosineAnnealingLR', by_epoch=False, begin=warmup, end=iters,
                                        eta_min=lr * 0.01))
    cfg.auto_scale_lr = dict(enable=False, base_batch_size=cfg.get('auto_scale_lr', {}).get('base_batch_size', 16))
    hooks = cfg.default_hooks
    hooks.logger = dict(type='LoggerHook', interval=10)
    hooks.checkpoint = dict(type='CheckpointHook', by_epoch=False, interval=iters, max_keep_ckpts=1)
    cfg.log_processor = dict(by_epoch=False)
    cfg.randomness = dict(seed=0)


def _use_dataset(cfg: Config, data_root: str, train_pipeline: list, test_pipeline: list, batch_size: int) -> None:
    """Point the train / val / test loaders at ``data_root`` with these pipelines."""
    for key, pipeline, batch in (('train_dataloader', train_pipeline, batch_size),
                                 ('val_dataloader', test_pipeline, 1), ('test_dataloader', test_pipeline, 1)):
        loader = cfg[key]
        loader.update(batch_size=batch, num_workers=1, persistent_workers=True)
        loader.dataset.update(data_root=data_root, pipeline=pipeline)


def _finish(cfg: Config, size: int, iters: int, lr: float, warmup: int, work_dir: Optional[str]) -> Config:
    """From-scratch backbone settings, the short schedule, the work dir and this machine."""
    backbone = cfg.model.backbone
    backbone.norm_eval = False  # from scratch: the BatchNorm statistics must be learned
    backbone.update(get_family(backbone.type).size_kwargs((size, size)))  # e.g. bias tables for this size
    _short_schedule(cfg, iters, lr, warmup)
    cfg.work_dir = work_dir or cfg.get('work_dir')
    return adapt_to_machine(cfg)


def detection_config(config: str, data_root: str, size: int, iters: int, batch_size: int = 4,
                     lr: float = 1e-3, work_dir: Optional[str] = None) -> Config:
    """A COCO detection config pointed at the built-in dataset, at ``size`` pixels."""
    cfg = load_config(config)
    data_root = data_root.rstrip('/') + '/'
    train_pipeline = [
        dict(type='LoadImageFromFile'),
        dict(type='LoadAnnotations', with_bbox=True, with_mask=True),
        dict(type='Resize', scale=(size, size), keep_ratio=True),
        dict(type='RandomFlip', prob=0.5),
        dict(type='PackDetInputs')]
    test_pipeline = [
        dict(type='LoadImageFromFile'),
        dict(type='Resize', scale=(size, size), keep_ratio=True),
        dict(type='LoadAnnotations', with_bbox=True, with_mask=True),
        dict(type='PackDetInputs', meta_keys=('img_id', 'img_path', 'ori_shape', 'img_shape', 'scale_factor'))]
    _use_dataset(cfg, data_root, train_pipeline, test_pipeline, batch_size)
    for key in ('val_evaluator', 'test_evaluator'):
        cfg[key].ann_file = data_root + 'annotations/instances_val2017.json'
    if 'roi_head' in cfg.model:
        cfg.model.train_cfg.rcnn.sampler.num = 32  # fewer sampled RoIs: the mask head dominates on CPU
    return _finish(cfg, size, iters, lr, 50, work_dir)


def segmentation_config(config: str, data_root: str, size: int, iters: int, batch_size: int = 4,
                        lr: float = 1e-3, work_dir: Optional[str] = None) -> Config:
    """An ADE20K Semantic FPN config pointed at the built-in dataset, cropping ``size``."""
    cfg = load_config(config)
    crop = (size, size)
    train_pipeline = [
        dict(type='LoadImageFromFile'),
        dict(type='LoadAnnotations', reduce_zero_label=True),
        dict(type='RandomResize', scale=(4 * size, size), ratio_range=(0.75, 1.5), keep_ratio=True),
        dict(type='RandomCrop', crop_size=crop, cat_max_ratio=0.75),
        dict(type='RandomFlip', prob=0.5),
        dict(type='PhotoMetricDistortion'),
        dict(type='PackSegInputs')]
    test_pipeline = [
        dict(type='LoadImageFromFile'),
        dict(type='Resize', scale=(4 * size, size), keep_ratio=True),
        dict(type='LoadAnnotations', reduce_zero_label=True),
        dict(type='PackSegInputs')]
    _use_dataset(cfg, data_root, train_pipeline, test_pipeline, batch_size)
    cfg.model.data_preprocessor.size = crop
    cfg.data_preprocessor = cfg.model.data_preprocessor
    return _finish(cfg, size, iters, lr, 30, work_dir)


def classification_config(config: str, data_root: str, size: int, iters: int, batch_size: int = 8,
                          lr: float = 1e-3, work_dir: Optional[str] = None) -> Config:
    """An ImageNet classification config (``configs/classification/``) pointed at the built-in
    dataset's ImageNet layout: its five classes, images of ``size`` pixels, a short iteration
    schedule. The recipe's batch augments (Mixup / CutMix), loss and gradient clipping stay;
    the image pipeline becomes a random resized crop and flip at ``size`` (the recipe's
    RandAugment and random erasing are tuned for 224 pixels); the EMA goes (over a few
    iterations it would stay at the initial weights, which the downstream models would then
    load). The configs name no distillation teacher by default, so none runs here."""
    from .dataset import class_names
    cfg = load_config(config)
    classes = class_names()['imagenet']
    train_pipeline = [
        dict(type='LoadImageFromFile'),
        dict(type='RandomResizedCrop', scale=size, backend='pillow', interpolation='bicubic'),
        dict(type='RandomFlip', prob=0.5, direction='horizontal'),
        dict(type='PackInputs')]
    test_pipeline = [
        dict(type='LoadImageFromFile'),
        dict(type='ResizeEdge', scale=size, edge='short', backend='pillow', interpolation='bicubic'),
        dict(type='CenterCrop', crop_size=size),
        dict(type='PackInputs')]
    for key, split, pipeline, batch in (('train_dataloader', 'train', train_pipeline, batch_size),
                                        ('val_dataloader', 'val', test_pipeline, batch_size),
                                        ('test_dataloader', 'val', test_pipeline, batch_size)):
        loader = cfg[key]
        loader.update(batch_size=batch, num_workers=1, persistent_workers=True)
        loader.dataset = dict(type='ImageNet', data_root=data_root, split=split, metainfo=dict(classes=classes),
                              pipeline=pipeline)
    cfg.model.head.num_classes = len(classes)
    if cfg.model.get('data_preprocessor') is not None:
        cfg.model.data_preprocessor.num_classes = len(classes)
    if cfg.get('data_preprocessor') is not None:
        cfg.data_preprocessor.num_classes = len(classes)
    for key in ('val_evaluator', 'test_evaluator'):
        cfg[key] = dict(type='Accuracy', topk=(1,))
    cfg.custom_hooks = [h for h in cfg.get('custom_hooks', []) if h.get('type') != 'EMAHook']
    recipe_clip = cfg.optim_wrapper.get('clip_grad')
    cfg = _finish(cfg, size, iters, lr, max(iters // 10, 1), work_dir)
    cfg.optim_wrapper.clip_grad = recipe_clip  # the recipe's own clipping (or none), not the demo's
    return cfg

