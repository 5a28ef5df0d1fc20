"""What the pretraining tests share: the compact official references (tests/data/reference) as
mmpretrain classifiers, and the official key names mapped to the classifier's."""
from typing import Dict, Tuple

import torch

from backbones.checkpoints.layouts import detect_layout, get_layout
from backbones.registry import FAMILIES

#: each family's compact official reference, its architecture in our terms and its extra
#: backbone arguments (tests/data/reference/README.md)
TINY = {
    'EdgeViT': ('edgevit_tiny.pt', dict(depths=(1, 1, 2, 1), widths=(16, 32, 64, 96), head_dim=16, mlp_ratio=4.,
                                        sr_ratios=(4, 2, 2, 1), qkv_bias=True), {}),
    'EfficientFormerV2': ('efficientformerv2_tiny_cls64.pt',
                          dict(depths=(1, 1, 2, 2), widths=(16, 24, 32, 48), num_vit=1, drop_path_rate=0.0,
                               mlp_ratios=((4, ), (4, ), (4, 3), (4, 3))), dict(resolution=64)),
}
HEAD_PARTS = ('norm', 'head', 'head_dist')


def classifier_key(ours: str) -> str:
    """A key of the package's classifier layout (``norm.*``, ``head.*``, ``head_dist.*``,
    backbone keys) as the mmpretrain classifier names it."""
    return ('head.' if ours.split('.')[0] in HEAD_PARTS else 'backbone.') + ours


def official_keys(family: str, compact_reference) -> Dict[str, Tuple[str, torch.Tensor]]:
    """{mmpretrain classifier key: (official key, official tensor)} of the family's reference."""
    official = compact_reference(TINY[family][0])['state_dict']
    layout = get_layout(detect_layout(official))
    assert layout is not None and layout.family == family
    out = {}
    for key, value in official.items():
        ours = layout.convert_key(key)
        if ours is not None:
            out[classifier_key(ours)] = (key, value)
    return out


def tiny_classifier(family: str, num_classes: int = 10, cls_type: str = 'ImageClassifier', **kwargs):
    """The mmpretrain classifier of the family's compact reference architecture, with the
    family's head (a distillation head where its classifier has one). It is built in mmpretrain's
    scope: an earlier test in the same process may have left mmdet's or mmseg's as the default."""
    from mmpretrain.registry import MODELS
    _, arch, extra = TINY[family]
    head = dict(type='EdgeformersClsHead', num_classes=num_classes, in_channels=arch['widths'][-1],
                distillation=FAMILIES[family].classifier_distillation)
    head.update(kwargs.pop('head', {}))
    return MODELS.build(dict(_scope_='mmpretrain', type=cls_type, backbone=dict(type=family, arch=arch, out_indices=(-1, ), **extra),
                             head=head, **kwargs))
