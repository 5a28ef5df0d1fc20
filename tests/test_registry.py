"""The family registry: every list of names derives from it, and a third family, a checkpoint
layout and an export format are each added as one record, with no other edit."""
import pytest
import torch
import torch.nn as nn

from backbones.base import MultiScaleBackbone
from backbones.registry import Paper, get_variant, register_family, unregister_family, variant_names, variants


def test_every_variant_is_a_classifier_an_export_target_and_a_paper_row():
    from backbones.analysis.papers import imagenet_figures
    from backbones.classifier import build_classifier
    from backbones.export.targets import build_target
    names = variant_names()
    assert names == [v.name for v in variants()] and len(set(names)) == len(names)
    assert list(imagenet_figures()) == names
    for v in variants():
        assert v.name == f'{v.cls.model_prefix}_{v.arch}' and v.label == f'{v.family}-{v.arch.upper()}'
        assert isinstance(build_classifier(v.name, num_classes=3), torch.nn.Module)
    assert build_target(names[0], (64, 64)).name == names[0]
    with pytest.raises(KeyError, match='choose one of'):
        get_variant('edgevit_xxxl')


# ---------------------------------------------------------------------------- a toy third family
class ToyStage(nn.Module):
    def __init__(self, in_ch: int, out_ch: int, stride: int) -> None:
        super().__init__()
        self.downsample = nn.Conv2d(in_ch, out_ch, 3, stride, 1) if stride > 1 else nn.Identity()
        self.blocks = nn.Sequential(nn.Conv2d(out_ch, out_ch, 3, padding=1), nn.BatchNorm2d(out_ch), nn.ReLU())

    def forward(self, x):
        return self.blocks(self.downsample(x))


class ToyNet(MultiScaleBackbone):
    """A tiny conv family, defined only here."""
    family = 'ToyNet'
    model_prefix = 'toynet'
    arch_settings = {'t': dict(depths=(1, 1, 1, 1), widths=(8, 16, 24, 32))}
    paper = Paper(title='A toy', url='-', code='-', imagenet={'t': dict(params='0.03', gmacs='0.01', top1='1.0')})

    def __init__(self, arch='t', out_indices=(0, 1, 2, 3), frozen_stages=-1, norm_eval=False, with_cp=False,
                 in_channels=3, init_cfg=None):
        super().__init__(out_indices, frozen_stages, norm_eval, with_cp, in_channels, init_cfg)
        self.arch = self.resolve_arch(arch)
        self.arch_name = arch if isinstance(arch, str) else 'custom'
        widths = self.arch['widths']
        self.stage_channels = tuple(widths)
        self.stem = nn.Sequential(nn.Conv2d(in_channels, widths[0], 4, 4), nn.BatchNorm2d(widths[0]))
        self.stages = nn.ModuleList(ToyStage(widths[max(i - 1, 0)], w, 2 if i else 1) for i, w in enumerate(widths))
        self._finish_init()


@pytest.fixture
def toy_family():
    from backbones.checkpoints.layouts import LAYOUTS, Layout, register_layout
    register_family(ToyNet)
    # its checkpoint layouts: ours, and a made-up legacy one (`trunk{s}.` for `stages.{s-1}.`)
    register_layout(Layout('toynet', 'ToyNet', lambda sd: any(k.startswith('stages.') for k in sd), priority=5))
    register_layout(Layout('toynet-legacy', 'ToyNet', lambda sd: any(k.startswith('trunk') for k in sd), priority=5,
                           rules=((r'^trunk(\d)\.', lambda m: f'stages.{int(m.group(1)) - 1}.'),)))
    yield ToyNet
    unregister_family('ToyNet')
    LAYOUTS.pop('toynet')
    LAYOUTS.pop('toynet-legacy')


def test_a_third_family_appears_everywhere_without_other_edits(toy_family, tmp_path):
    from mmdet.registry import MODELS as DET_MODELS
    from mmseg.registry import MODELS as SEG_MODELS

    from backbones.analysis.complexity import backbone_label, imagenet_table
    from backbones.classifier import build_classifier
    from backbones.export.targets import build_target
    from backbones.runtime.models import build_retinanet

    assert DET_MODELS.get('ToyNet') is ToyNet and SEG_MODELS.get('ToyNet') is ToyNet
    assert 'toynet_t' in variant_names() and get_variant('toynet_t').label == 'ToyNet-T'
    assert build_classifier('toynet_t', num_classes=7)(torch.zeros(1, 3, 64, 64)).shape == (1, 7)
    [row] = imagenet_table(['toynet_t'])
    assert row['paper_params'] == '0.03' and row['params'] > 0
    assert backbone_label('configs/detection/retinanet_toynet-t_fpn_8xb2-1x_coco.py') == 'ToyNet-T'
    detector = build_retinanet('toynet_t', (64, 64)).eval()
    with torch.no_grad():
        assert len(detector.extract_feat(torch.zeros(1, 3, 64, 64))) == 5
    target = build_target('toynet_t', (64, 64))
    assert [tuple(f.shape) for f in target.module(torch.zeros(1, 3, 64, 64))] == [
        (1, 8, 16, 16), (1, 16, 8, 8), (1, 24, 4, 4), (1, 32, 2, 2)]
    # its legacy checkpoint layout is one record: detected, converted and loaded by init_cfg
    source = ToyNet()
    legacy = {(f'trunk{int(k.split(".")[1]) + 1}.' + k.split('.', 2)[2]) if k.startswith('stages.') else k: v
              for k, v in source.state_dict().items()}
    torch.save(legacy, tmp_path / 'legacy.pth')
    loaded = ToyNet(init_cfg=dict(type='Pretrained', checkpoint=str(tmp_path / 'legacy.pth')))
    loaded.init_weights()
    for k, v in source.state_dict().items():
        assert torch.equal(loaded.state_dict()[k], v), k


def test_an_export_format_is_one_record(tmp_path):
    """A torch.export (.pt2) format, added as one record: the export tool's list, the parity
    check and the runner pick it up."""
    from backbones.export.convert import export
    from backbones.export.formats import FORMATS, Format, Written, register_format
    from backbones.export.targets import build_target

    def write(module, example, path):
        torch.export.save(torch.export.export(module, (example,)), path)
        return Written()

    def runner(path, threads=None):
        program = torch.export.load(path).module()
        return lambda x: list(program(x))

    register_format(Format('pt2', '.pt2', 'export', 'torch', write, runner))
    try:
        result = export(build_target('efficientformerv2_s0', (64, 64)), 'pt2', str(tmp_path))
        assert result.path.endswith('_64x64.pt2') and result.max_rel_diff < 1e-5, result.describe()
    finally:
        FORMATS.pop('pt2')
