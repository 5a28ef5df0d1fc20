"""Configs to models: loading a config, building its model with the toolbox registered,
the image meta a single unpadded image needs, and detectors built around any variant."""
from __future__ import annotations

import os
import os.path as osp
import tempfile
import textwrap
from typing import Any, Dict, Optional, Tuple

from mmengine.config import Config

from ..registry import get_variant


def load_config(config: str, cfg_options: Optional[Dict[str, Any]] = None) -> Config:
    if not osp.isfile(config):
        raise FileNotFoundError(f'config file {config!r} does not exist; configs live in '
                                'configs/detection/, configs/segmentation/ and configs/classification/')
    cfg = Config.fromfile(config)
    if cfg_options:
        cfg.merge_from_dict(cfg_options)
    return cfg


def config_scope(cfg: Config) -> str:
    """The toolbox of a config: ``'mmdet'``, ``'mmseg'`` or ``'mmpretrain'``."""
    return cfg.get('default_scope', 'mmdet')


def new_config_keys(config: str, cfg_options: Dict[str, Any]) -> Dict[str, str]:
    """The keys of ``cfg_options`` (dotted, as ``--cfg-options`` takes them) that ``config``
    does not have: ``{key: what the deepest existing part of its path holds}``. mmengine
    adds such keys silently; a misspelt one leaves the setting it meant at its default."""
    tree = load_config(config).to_dict()
    new: Dict[str, str] = {}
    for key in cfg_options:
        node: Any = tree
        parts = key.split('.')
        for depth, part in enumerate(parts):
            if isinstance(node, dict) and part in node:
                node = node[part]
                continue
            if isinstance(node, (list, tuple)) and part.isdigit() and int(part) < len(node):
                node = node[int(part)]
                continue
            where = '.'.join(parts[:depth]) or 'the config'
            has = ', '.join(sorted(str(k) for k in node)) if isinstance(node, dict) else type(node).__name__
            new[key] = f'{where} has {has}'
            break
    return new


def warn_new_config_keys(config: str, cfg_options: Optional[Dict[str, Any]]) -> None:
    """A warning for each key of ``cfg_options`` that ``config`` lacks (see :func:`new_config_keys`)."""
    import warnings
    for key, where in new_config_keys(config, cfg_options or {}).items():
        warnings.warn(f'--cfg-options {key}: not in {config} ({where}); it is added as given, so check its '
                      'spelling: a misspelt key leaves the setting it meant unchanged')


def build_model_from_config(config: str, cfg_options: Optional[Dict[str, Any]] = None):
    """The model of an mmdet / mmseg / mmpretrain config (pretrained weights not loaded), with
    its toolbox's modules registered, after ``cfg_options`` (``{'model.test_cfg.rcnn.max_per_img':
    20}``, as ``--cfg-options`` gives them) are merged in; returns ``(model, scope)``."""
    import importlib

    import backbones  # noqa: F401  (registers the families)
    cfg = load_config(config, cfg_options)
    scope = config_scope(cfg)
    toolbox = scope if scope in ('mmseg', 'mmpretrain') else 'mmdet'
    MODELS = importlib.import_module(f'{toolbox}.registry').MODELS
    importlib.import_module(f'{toolbox}.utils').register_all_modules(init_default_scope=True)
    cfg.model.get('backbone', {}).pop('init_cfg', None)
    return MODELS.build(cfg.model), scope


def image_meta(size: Tuple[int, int], ori_shape: Optional[Tuple[int, int]] = None,
               scale_factor: Tuple[float, float] = (1.0, 1.0)) -> dict:
    """The mmdet / mmseg image meta of one unpadded ``size`` input."""
    return dict(img_shape=tuple(size), ori_shape=tuple(ori_shape or size), pad_shape=tuple(size),
                batch_input_shape=tuple(size), scale_factor=scale_factor)


def backbone_cfg(name: str, size: Tuple[int, int]) -> dict:
    """The config dict of a variant's backbone (``type``, ``arch``) for inputs of ``size``."""
    variant = get_variant(name)
    return dict(type=variant.family, arch=variant.arch, **variant.cls.size_kwargs(size))


def build_retinanet(name: str, size: Tuple[int, int] = (800, 800)):
    """RetinaNet (mmdet's r50 1x COCO recipe) around a variant, with a matching FPN."""
    from mmdet.registry import MODELS
    from mmdet.utils import register_all_modules
    register_all_modules()
    variant = get_variant(name)
    channels = list(variant.cls.resolve_arch(variant.arch)['widths'])
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, 'retinanet.py')
        with open(path, 'w') as f:
            f.write(textwrap.dedent(f"""
                _base_ = 'mmdet::retinanet/retinanet_r50_fpn_1x_coco.py'
                custom_imports = dict(imports=['backbones'], allow_failed_imports=False)
                model = dict(backbone=dict(_delete_=True, **{backbone_cfg(name, size)!r}),
                             neck=dict(in_channels={channels!r}))
            """))
        cfg = Config.fromfile(path)
    return MODELS.build(cfg.model)
