"""backbones.pretrain: importing it registers every family, and each family registered later,
in mmpretrain's MODELS; ``import backbones`` works without mmpretrain, and ``import
backbones.pretrain`` then names the extra to install."""
import subprocess
import sys

import pytest
import torch
import torch.nn as nn

from backbones.registry import FAMILIES, REGISTRY_MODULES, register_family, unregister_family

from .conftest import ROOT


def test_import_backbones_works_without_mmpretrain_and_pretrain_names_the_extra():
    code = ('import sys; sys.modules["mmpretrain"] = None\n'  # as if mmpretrain were not installed
            'import backbones\n'
            'assert "mmpretrain.registry" not in backbones.registry.REGISTRY_MODULES\n'
            'try:\n'
            '    import backbones.pretrain\n'
            'except ModuleNotFoundError as err:\n'
            '    print(err)\n')
    out = subprocess.run([sys.executable, '-c', code], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    assert 'needs mmpretrain' in out.stdout and 'pip install -e ".[pretrain]"' in out.stdout


class ToyPretrainNet(nn.Module):
    """A family registered after backbones.pretrain was imported (defined only here)."""
    family = 'ToyPretrainNet'
    model_prefix = 'toypretrainnet'
    arch_settings = {'t': dict(depths=(1, ), widths=(8, ))}

    def __init__(self, arch='t', out_indices=(-1, )):
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 4, 4)

    def forward(self, x):
        return (self.conv(x), )


def test_every_family_and_each_later_one_is_in_mmpretrains_registry():
    pytest.importorskip('mmpretrain')
    from backbones.pretrain import EdgeformersClsHead
    from mmpretrain.registry import MODELS
    assert MODELS.get('EdgeformersClsHead') is EdgeformersClsHead
    assert 'mmpretrain.registry' in REGISTRY_MODULES
    for name, cls in FAMILIES.items():
        assert MODELS.get(name) is cls
    register_family(ToyPretrainNet)
    try:
        assert MODELS.get('ToyPretrainNet') is ToyPretrainNet
        model = MODELS.build(dict(_scope_='mmpretrain', type='ImageClassifier', backbone=dict(type='ToyPretrainNet'),
                                  head=dict(type='EdgeformersClsHead', num_classes=3, in_channels=8)))
        assert model(torch.zeros(2, 3, 16, 16), mode='tensor').shape == (2, 3)
    finally:
        unregister_family('ToyPretrainNet')
    assert 'ToyPretrainNet' not in MODELS.module_dict
