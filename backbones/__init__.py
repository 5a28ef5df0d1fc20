"""edgeformers: EdgeViT and EfficientFormerV2 backbones for OpenMMLab.

``import backbones`` registers every family (``EdgeViT``, ``EfficientFormerV2``) in mmdet's
and mmsegmentation's ``MODELS`` registries, so a config only needs
``custom_imports = dict(imports=['backbones'], allow_failed_imports=False)``.
"""
from .edgevit import EdgeViT
from .efficientformer_v2 import EfficientFormerV2
from .registry import FAMILIES, get_family, get_variant, register_family, variants
from .runtime import resume as _resume  # noqa: F401  (registers RandomStateHook in mmengine's HOOKS)
from .runtime.mmengine_setup import register_mmengine_loader

__all__ = ['EdgeViT', 'EfficientFormerV2', 'FAMILIES', 'register_family', 'variants', 'get_variant',
           'get_family']
__version__ = '0.1.0'

register_mmengine_loader()
