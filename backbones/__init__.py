"""edgeformers: EdgeViT and EfficientFormerV2 backbones for OpenMMLab.

``import backbones`` registers every family (``EdgeViT``, ``EfficientFormerV2``) in mmdet's
and mmsegmentation's ``MODELS`` registries, so a config only needs
``custom_imports = dict(imports=['backbones'], allow_failed_imports=False)``.
"""
from .checkpoints.io import register_mmengine_loader
from .edgevit import EdgeViT
from .efficientformer_v2 import EfficientFormerV2
from .registry import FAMILIES, get_family, get_variant, register_family, variants
from .runtime import resume as _resume  # noqa: F401  (registers RandomStateHook in mmengine's HOOKS)

__all__ = ['EdgeViT', 'EfficientFormerV2', 'BACKBONES', 'FAMILIES', 'register_family', 'variants', 'get_variant',
           'get_family']
__version__ = '0.1.0'

#: every registered backbone family, by registered name (the registry's own dict)
BACKBONES = FAMILIES

register_mmengine_loader()
