"""backbones.benchmark.operators: per-operator profiles of ExecuTorch XNNPACK exports (units
as XNNPACK fuses them, layouts, tables); tools/benchmark.py --profile on real exports."""
import json
import sys

import pytest

from backbones.benchmark.baselines import REFERENCE

from .conftest import ROOT

pytest.importorskip('executorch')


def _profile(model, whole, groups, **kwargs):
    from backbones.benchmark.operators import GroupProfile, ModelProfile
    return ModelProfile(model, (224, 224), whole, [GroupProfile(label, count, ms) for label, count, ms in groups],
                        delegate_calls=1, portable_ops={}, delegated_ops=sum(c for _, c, _ in groups),
                        distinct_units=len(groups), layout_conversions=2, call_overhead_ms={1: 0.004, 2: 0.005},
                        **kwargs)


def test_profile_tables_give_shares_speedups_and_the_rest():
    from backbones.benchmark.operators import format_profile, format_profile_summary, profile_report
    ours = _profile('efficientformerv2_s0', {1: 10.0, 2: 8.0},
                    [('conv 1x1', 30, {1: 4.0, 2: 2.5}), ('gelu', 20, {1: 2.0, 2: 1.6}), ('bmm', 8, {1: 1.0, 2: 1.25})])
    reference = _profile(REFERENCE, {1: 8.0, 2: 5.0}, [('conv 1x1', 35, {1: 6.0, 2: 3.5})])
    table = format_profile(ours, [1, 2])
    assert '| conv 1x1 | 30 | 4.00 | 2.50 | 40.0% | 57.1% | 1.60x |' in table
    assert '| bmm | 8 | 1.00 | 1.25 | 10.0% | 14.3% | 0.80x |' in table
    assert '| sum of isolated operators | 58 | 7.00 | 5.35 | 70.0% | 100.0% |' in table
    assert '| rest (whole minus sum) |  | 3.00 | 2.65 | 30.0% |' in table
    assert '4 us at 1T, 5 us at 2T' in table
    summary = format_profile_summary([reference, ours], [1, 2], REFERENCE)
    assert ('| efficientformerv2_s0 | 10.00 | 8.00 | 1.25x | 1.25x | 7.00 (1.17x) | 58 | 1 | 0 | 2 | '
            'conv 1x1 40%, gelu 20%, bmm 10% |') in summary
    report = profile_report([reference, ours], [1, 2], REFERENCE, etdump=False)
    assert 'no ETDump' in report and report.count('####') == 2
    from backbones.benchmark.operators import profile_json, profiles_from_json
    again = profiles_from_json(json.loads(json.dumps(profile_json([reference, ours], False))))
    assert profile_report(again, [1, 2], REFERENCE, etdump=False) == report


def test_profile_units_follow_xnnpack_fusion_and_layouts():
    """Operator units on an edge graph: conv + BatchNorm + ReLU6 is one unit (XNNPACK fuses
    them), GELU after a conv is not; 4-D maps after convolutions are NHWC and the view
    before a bmm needs NCHW, as does the output."""
    import torch
    import torch.nn as nn
    from executorch.exir import to_edge
    from backbones.benchmark.operators import layout_conversions, nhwc_tags, split_units, unit_program

    class Tiny(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(3, 8, 3, padding=1)
            self.bn = nn.BatchNorm2d(8)
            self.dw = nn.Conv2d(8, 8, 3, padding=1, groups=8)
            self.pw = nn.Conv2d(8, 8, 1)

        def forward(self, x):
            y = nn.functional.relu6(self.bn(self.conv(x)))
            y = nn.functional.gelu(self.pw(self.dw(y))) + y
            t = y.reshape(8, 8, 8)
            return torch.bmm(t, t.transpose(1, 2)).softmax(-1), y

    x = torch.rand(1, 3, 8, 8)
    ep = to_edge(torch.export.export(Tiny().eval(), (x,))).exported_program()
    units = split_units(ep, delegated=True)
    labels = [u.label for u in units]
    assert labels[:5] == ['conv 3x3', 'conv depth-wise 3x3', 'conv 1x1', 'gelu', 'add'], labels
    assert [n.name for n in units[0].nodes][1:] == ['aten__native_batch_norm_legit_no_training_default', 'getitem',
                                                    'aten_hardtanh_default']
    assert {'bmm (attention matmul)', 'softmax', 'transpose (permute_copy)'} <= set(labels)
    tags = nhwc_tags(ep)
    add = next(n for n in ep.graph.nodes if n.name == 'aten_add_tensor')
    assert tags[add] and not any(tags[n] for n in ep.graph.nodes if n.name.startswith('aten_view_copy'))
    # the input to NHWC; the sum to NCHW, once for both the view and the output
    assert layout_conversions(ep, tags) == 2
    module, inputs, key = unit_program(ep, units[0], tags)
    assert len(inputs) == 1 and inputs[0].shape == (1, 3, 8, 8) and len(module.constant0.shape) == 4
    out = module(*inputs)
    assert out[0].shape == (1, 8, 8, 8) and float(out[0].min()) >= 0 and float(out[0].max()) <= 6
    _, _, key_gelu = unit_program(ep, units[3], tags)
    assert key != key_gelu


@pytest.mark.slow
def test_profile_cli_on_real_exports(tmp_path):
    """tools/benchmark.py --profile on EfficientFormerV2-S0 at 64x64 beside MobileNetV2: both
    lowered to one XNNPACK delegate call, every operator timed, tables written."""
    sys.path.insert(0, str(ROOT / 'tools'))
    import benchmark as tool
    assert tool.main(['--profile', 'efficientformerv2_s0', '--size', '64', '64', '--threads', '1', '2',
                      '--seconds', '0.3', '--results-dir', str(tmp_path), '--out-dir', str(tmp_path / 'work')]) == 0
    report = (tmp_path / 'profile_64x64.md').read_text()
    data = json.loads((tmp_path / 'profile_64x64.json').read_text())
    assert [p['model'] for p in data['profiles']] == [REFERENCE, 'efficientformerv2_s0']
    for p in data['profiles']:
        assert p['delegate_calls'] == 1 and p['portable_ops'] == {}
        assert all(p['whole_ms'][n] > 0 for n in ('1', '2'))
        assert sum(g['count'] for g in p['groups']) == p['delegated_ops']
    s0 = {g['label'] for g in data['profiles'][1]['groups']}
    assert {'conv 1x1', 'conv depth-wise 3x3', 'gelu', 'bmm (attention matmul)', 'softmax'} <= s0
    assert '#### efficientformerv2_s0 (64x64)' in report and '| mobilenet_v2_x1.0 |' in report
    assert report.startswith('`tools/benchmark.py --profile efficientformerv2_s0 --size 64 64')
