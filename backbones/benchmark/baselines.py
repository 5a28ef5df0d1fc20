"""The reference models every benchmark times beside ours: torchvision's MobileNetV2 x1.0 /
x1.4 and ResNet-18, and the published ImageNet top-1 of every model."""
from __future__ import annotations

from typing import Optional, Tuple

from ..export.targets import Target
from ..registry import get_variant, variant_names

#: torchvision baselines and their ImageNet top-1 (torchvision's published IMAGENET1K_V1 figures;
#: MobileNetV2 x1.4 from the MobileNetV2 paper, as quoted in PAPERS.md)
BASELINES = {'mobilenet_v2_x1.0': 71.878, 'mobilenet_v2_x1.4': 74.7, 'resnet18': 69.758}
REFERENCE = 'mobilenet_v2_x1.0'


def baseline_target(name: str, size: Tuple[int, int]) -> Target:
    import torchvision
    if name == 'mobilenet_v2_x1.0':
        model = torchvision.models.mobilenet_v2(width_mult=1.0)
    elif name == 'mobilenet_v2_x1.4':
        model = torchvision.models.mobilenet_v2(width_mult=1.4)
    elif name == 'resnet18':
        model = torchvision.models.resnet18()
    else:
        raise ValueError(f'unknown baseline {name!r}; choose from {list(BASELINES)}')
    return Target(name, model.eval(), tuple(size), kind='baseline')


def top1(name: str) -> Optional[float]:
    """ImageNet top-1 (%) of a baseline or a variant as published; None when unknown."""
    if name in BASELINES:
        return BASELINES[name]
    if name in variant_names():
        value = get_variant(name).imagenet.get('top1')
        return float(value) if value else None
    return None
