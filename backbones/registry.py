"""Registration of the backbones in mmdet's and mmsegmentation's ``MODELS``."""
from __future__ import annotations

import importlib
from typing import Iterable, List

#: the registries the backbones join, by the package that owns them
REGISTRY_MODULES = ('mmdet.registry', 'mmseg.registry')


def register_all(classes: Iterable[type]) -> List[str]:
    """Register ``classes`` in every installed OpenMMLab ``MODELS`` registry.

    A missing toolbox is skipped (a user of only mmdet needs no mmseg); a toolbox that is
    installed but fails to import raises, since that is a broken environment to fix.
    Returns the names of the registries used.
    """
    classes = list(classes)
    used = []
    for module_name in REGISTRY_MODULES:
        try:
            registry = importlib.import_module(module_name).MODELS
        except ModuleNotFoundError as err:
            if err.name and module_name.startswith(err.name.split('.')[0]):
                continue
            raise
        for cls in classes:
            if registry.get(cls.__name__) is not cls:
                registry.register_module(name=cls.__name__, module=cls, force=True)
        used.append(module_name)
    return used
