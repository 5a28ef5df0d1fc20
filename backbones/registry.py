"""The one list of model families and variants, filled by :func:`register_family`.

A family is a :class:`~backbones.base.MultiScaleBackbone` subclass decorated with
``@register_family``. Registering it also registers the class in every installed OpenMMLab
``MODELS`` registry (mmdet, mmseg; mmpretrain once :mod:`backbones.pretrain` is imported),
and every list of names in the package (classifiers, paper figures, the export and benchmark
lists, complexity tables) is derived from here: a new family is its model file and its
checkpoint-layouts file, nothing else.

The class attributes a family declares (checked at registration):

* ``family``: the registered type name (``'EdgeViT'``), used in configs as ``type=``;
* ``model_prefix``: the prefix of its variant names and config names (``'edgevit'`` gives
  ``edgevit_xxs`` and ``retinanet_edgevit-xxs_...``);
* ``arch_settings``: the variants, ``{arch: settings}``;
* ``paper``: a :class:`Paper` (title, links, the published figures), optional;
* ``classifier_distillation``: whether its ImageNet classifier has a distillation head.
"""
from __future__ import annotations

import importlib
from dataclasses import dataclass, field
from typing import Dict, Iterable, List, Optional, Tuple

#: the registries the backbones join, by the package that owns them; importing
#: :mod:`backbones.pretrain` adds ``'mmpretrain.registry'`` (see :func:`add_registry_module`)
REGISTRY_MODULES: List[str] = ['mmdet.registry', 'mmseg.registry']


@dataclass(frozen=True)
class Paper:
    """A family's paper and the figures it publishes (strings keep the printed precision).

    Args:
        imagenet: ``{arch: dict(params=..., gmacs=..., top1=...)}`` at 224, with classifier.
        downstream: ``{config name: dict(params=..., gflops=..., box_ap=..., mask_ap=..., miou=...)}``.
    """
    title: str
    url: str
    code: str
    imagenet: Dict[str, Dict[str, str]] = field(default_factory=dict)
    downstream: Dict[str, Dict[str, str]] = field(default_factory=dict)


@dataclass(frozen=True)
class Variant:
    """One named variant of a family, e.g. ``edgevit_xxs`` = EdgeViT with ``arch='xxs'``."""
    name: str
    cls: type
    arch: str

    @property
    def family(self) -> str:
        return self.cls.family

    @property
    def label(self) -> str:
        """The papers' name, e.g. ``EdgeViT-XXS``."""
        return f'{self.cls.family}-{self.arch.upper()}'

    @property
    def imagenet(self) -> Dict[str, str]:
        """The paper's ImageNet figures of this variant (empty when it gives none)."""
        paper = getattr(self.cls, 'paper', None)
        return dict(paper.imagenet.get(self.arch, {})) if paper else {}


#: registered type name -> family class, in registration order
FAMILIES: Dict[str, type] = {}

_REQUIRED = ('family', 'model_prefix', 'arch_settings')


def register_family(cls: type) -> type:
    """Class decorator: add a backbone family to the registry and to the MODELS registry of
    every toolbox in :data:`REGISTRY_MODULES` (mmdet's, mmseg's; mmpretrain's once
    :mod:`backbones.pretrain` is imported)."""
    for attr in _REQUIRED:
        if not getattr(cls, attr, None):
            raise TypeError(f'{cls.__name__}: a registered family needs a non-empty class attribute {attr!r}')
    if cls.family != cls.__name__:
        raise TypeError(f'{cls.__name__}: family must equal the class name (the config type), got {cls.family!r}')
    clash = [v.name for v in variants() if v.cls is not cls and v.name.startswith(cls.model_prefix + '_')]
    if clash:
        raise ValueError(f'{cls.__name__}: model_prefix {cls.model_prefix!r} is taken by {clash}')
    FAMILIES[cls.family] = cls
    register_in_openmmlab([cls])
    return cls


def unregister_family(name: str) -> None:
    """Remove a family from this registry and the OpenMMLab ones (tests, plugins reloading)."""
    FAMILIES.pop(name, None)
    for registry in _openmmlab_registries():
        registry._module_dict.pop(name, None)


def get_family(name: str) -> type:
    """The family class registered as ``name`` (its config type, e.g. ``'EdgeViT'``)."""
    try:
        return FAMILIES[name]
    except KeyError:
        raise KeyError(f'no backbone family {name!r}; registered: {sorted(FAMILIES)}') from None


def variants(family: Optional[str] = None) -> List[Variant]:
    """Every registered variant (of one family when ``family`` is given), in registration order."""
    classes = [get_family(family)] if family else list(FAMILIES.values())
    return [Variant(f'{cls.model_prefix}_{arch}', cls, arch) for cls in classes for arch in cls.arch_settings]


def variant_names() -> List[str]:
    return [v.name for v in variants()]


def get_variant(name: str) -> Variant:
    """A variant by name, e.g. ``'efficientformerv2_s0'``."""
    for v in variants():
        if v.name == name:
            return v
    raise KeyError(f'unknown model {name!r}; choose one of {variant_names()}')


def variant_of_config(config_name: str) -> Optional[Variant]:
    """The variant a config name states (``..._{prefix}-{arch}_...``), or None."""
    for v in variants():
        if f'_{v.cls.model_prefix}-{v.arch}_' in f'_{config_name}_':
            return v
    return None


def downstream_figures() -> Dict[str, Dict[str, str]]:
    """The papers' whole-model figures of every family, by config name."""
    out: Dict[str, Dict[str, str]] = {}
    for cls in FAMILIES.values():
        paper = getattr(cls, 'paper', None)
        if paper:
            out.update(paper.downstream)
    return out


def _openmmlab_registries() -> Iterable:
    for module_name in REGISTRY_MODULES:
        try:
            yield importlib.import_module(module_name).MODELS
        except ModuleNotFoundError as err:
            # a missing toolbox is skipped (a user of only mmdet needs no mmseg); one that is
            # installed but fails to import raises, since that is a broken environment to fix
            if err.name and module_name.startswith(err.name.split('.')[0]):
                continue
            raise


def add_registry_module(module_name: str) -> Tuple[str, ...]:
    """Join the ``MODELS`` registry of another toolbox (e.g. ``'mmpretrain.registry'``): every
    family registered so far is registered there now, and each later one when it registers.
    Returns the scopes the families are registered in."""
    if module_name not in REGISTRY_MODULES:
        REGISTRY_MODULES.append(module_name)
    return register_in_openmmlab(FAMILIES.values())


def register_in_openmmlab(classes: Iterable[type]) -> Tuple[str, ...]:
    """Register ``classes`` in every installed OpenMMLab ``MODELS`` registry."""
    classes = list(classes)
    used = []
    for registry in _openmmlab_registries():
        for cls in classes:
            if registry.get(cls.__name__) is not cls:
                registry.register_module(name=cls.__name__, module=cls, force=True)
        used.append(registry.scope)
    return tuple(used)
