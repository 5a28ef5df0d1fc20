"""edgeformers: EdgeViT and EfficientFormerV2 backbones for OpenMMLab.

``import backbones`` registers ``EdgeViT`` and ``EfficientFormerV2`` in mmdet's and
mmsegmentation's ``MODELS`` registries, so a config only needs
``custom_imports = dict(imports=['backbones'], allow_failed_imports=False)``.
"""
from .edgevit import EdgeViT
from .efficientformer_v2 import EfficientFormerV2
from .compat import patch_checkpoint_loading
from . import resume as _resume  # noqa: F401  (registers RandomStateHook)
from .registry import register_all

__all__ = ['EdgeViT', 'EfficientFormerV2', 'BACKBONES']
__version__ = '0.1.0'

#: every backbone family, by registered name
BACKBONES = {'EdgeViT': EdgeViT, 'EfficientFormerV2': EfficientFormerV2}

register_all(BACKBONES.values())
patch_checkpoint_loading()
