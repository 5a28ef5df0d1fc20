"""Modules of the package the tools use before (or without) importing torch, loaded by path.

Importing them as ``backbones.X`` would run the package's ``__init__``, which imports torch,
mmcv and the OpenMMLab registries; these modules import nothing of the package, so the tools
that answer ``--help`` and argument errors at once (and the torch-free runner) load the file
alone.
"""
import importlib.util
import os
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def load_package_module(relative: str):
    """``backbones/<relative>.py`` as the module ``edgeformers_<name>``, without the package."""
    name = 'edgeformers_' + relative.replace('/', '_')
    if name in sys.modules:
        return sys.modules[name]
    if ROOT not in sys.path:
        sys.path.insert(0, ROOT)
    package = importlib.util.find_spec('backbones')  # finds the package without importing it
    path = os.path.join(package.submodule_search_locations[0], *relative.split('/')) + '.py'
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


def load_runner():
    """The torch-free runner of end-to-end exports, ``backbones/export/runner.py``."""
    return load_package_module('export/runner')


def load_cfg_options():
    """``backbones/runtime/cfg_options.py``: the ``--cfg-options`` argument."""
    return load_package_module('runtime/cfg_options')
