"""The benchmark's bookkeeping (timing statistics, ratios, tables, plot) and its memory measurement;
timings themselves are measured by tools/benchmark.py, never asserted."""
import pytest
import torch

from backbones.export.benchmark import REFERENCE, Timing, format_table, plot, time_callable, top1


def test_time_callable_reports_median_and_p90():
    calls = []
    median, p90, runs = time_callable(lambda: calls.append(1), seconds=0.05, warmup=3)
    assert runs >= 5 and len(calls) == runs + 3
    assert 0 <= median <= p90


def test_ratios_table_and_plot(tmp_path):
    timings = [Timing(REFERENCE, 'executorch', 1, 8.0, 9.0, 100), Timing('efficientformerv2_s0', 'executorch', 1, 12.0, 13.0, 80)]
    for t in timings:
        t.ratio = t.median_ms / 8.0
    table = format_table(timings, 'test machine')
    assert '12.00 (1.50x)' in table and '8.00 (1.00x)' in table and 'test machine' in table
    assert top1('efficientformerv2_s0') == pytest.approx(75.7)
    png = plot(timings, 'executorch', 1, str(tmp_path / 'plot.png'), 'test machine')
    assert (tmp_path / 'plot.png').stat().st_size > 1000 and png.endswith('.png')


def test_machine_description_names_the_cpu_generation(tmp_path):
    """One marketing name ('AMD EPYC') covers several generations; the tables name family,
    model and vector extension (the first processor's block of /proc/cpuinfo)."""
    from backbones.export.benchmark import machine_description
    x86 = tmp_path / 'x86'
    x86.write_text('processor\t: 0\nvendor_id\t: AuthenticAMD\ncpu family\t: 26\nmodel\t\t: 2\n'
                   'model name\t: AMD EPYC\nflags\t\t: fpu sse avx2 avx512f avx512bw\n\n'
                   'processor\t: 1\ncpu family\t: 99\nmodel name\t: other\n')
    assert machine_description(str(x86)).startswith('AMD EPYC (family 26, model 2, AVX-512), ')
    arm = tmp_path / 'arm'
    arm.write_text('processor\t: 0\nBogoMIPS\t: 50.00\nFeatures\t: fp asimd evtstrm aes\n')
    assert ' (NEON), ' in machine_description(str(arm))
    assert '(' not in machine_description(str(tmp_path / 'missing'))  # no cpuinfo: the platform's name


def test_interleaved_timing_gives_every_model_its_share():
    from backbones.export.benchmark import time_interleaved
    calls = {'a': 0, 'b': 0}

    def make(name):
        def run():
            calls[name] += 1
        return run

    stats = time_interleaved({'a': make('a'), 'b': make('b')}, seconds=0.04, rounds=4, warmup=2)
    for name in ('a', 'b'):
        median, p90, runs = stats[name]
        assert runs >= 4 and calls[name] == runs + 2 and 0 <= median <= p90


def test_eager_table():
    from backbones.export.benchmark import EagerTiming, format_eager_table
    table = format_eager_table([EagerTiming('efficientformerv2_s0', 8, 2, 90.0, 100.0)], 'test machine')
    assert '| efficientformerv2_s0 | 8 | 2 | 90.0 | 100.0 | 0.90 |' in table


def test_host_threads_holds_and_restores_torch_pool():
    import torch
    from backbones.export.benchmark import host_threads
    before = torch.get_num_threads()
    with host_threads(1):
        assert torch.get_num_threads() == 1
    assert torch.get_num_threads() == before
    with host_threads(0):  # 0 / None: PyTorch's pool as it is
        assert torch.get_num_threads() == before


# ---------------------------------------------------------------------------- per-operator profiles
def _profile(model, whole, groups, **kwargs):
    from backbones.export.profile import GroupProfile, ModelProfile
    return ModelProfile(model, (224, 224), whole, [GroupProfile(label, count, ms) for label, count, ms in groups],
                        delegate_calls=1, portable_ops={}, delegated_ops=sum(c for _, c, _ in groups),
                        distinct_units=len(groups), layout_conversions=2, call_overhead_ms={1: 0.004, 2: 0.005},
                        **kwargs)


def test_profile_tables_give_shares_speedups_and_the_rest():
    from backbones.export.profile import format_profile, format_profile_summary, profile_report
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
    report = profile_report([reference, ours], [1, 2], 'test machine', REFERENCE, etdump=False)
    assert 'test machine' in report and 'no ETDump' in report and report.count('####') == 2
    from backbones.export.profile import profile_json, profiles_from_json
    import json
    again = profiles_from_json(json.loads(json.dumps(profile_json([reference, ours], 'test machine', False))))
    assert profile_report(again, [1, 2], 'test machine', REFERENCE, etdump=False) == report


def test_profile_units_follow_xnnpack_fusion_and_layouts():
    """Operator units on an edge graph: conv + BatchNorm + ReLU6 is one unit (XNNPACK fuses
    them), GELU after a conv is not; 4-D maps after convolutions are NHWC and the view
    before a bmm needs NCHW, as does the output."""
    import torch
    import torch.nn as nn
    from executorch.exir import to_edge
    from backbones.export.profile import layout_conversions, nhwc_tags, split_units, unit_program

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
    import json
    import os
    import sys
    sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), 'tools'))
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


def _tiny_onnx(path):
    """x [64, 256] -> MatMul [256, 512] -> Softmax -> MatMul [512, 8]: the first MatMul does
    most of the work."""
    import numpy as np
    import onnx
    from onnx import TensorProto, helper, numpy_helper
    rng = np.random.default_rng(0)
    graph = helper.make_graph(
        [helper.make_node('MatMul', ['x', 'w1'], ['h'], name='big_matmul'),
         helper.make_node('Softmax', ['h'], ['s'], name='softmax', axis=-1),
         helper.make_node('MatMul', ['s', 'w2'], ['y'], name='small_matmul')],
        'tiny', [helper.make_tensor_value_info('x', TensorProto.FLOAT, [64, 256])],
        [helper.make_tensor_value_info('y', TensorProto.FLOAT, [64, 8])],
        [numpy_helper.from_array(rng.standard_normal((256, 512)).astype(np.float32), 'w1'),
         numpy_helper.from_array(rng.standard_normal((512, 8)).astype(np.float32), 'w2')])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid('', 18)])
    model.ir_version = 9
    onnx.save(model, str(path))
    return str(path)


def test_onnx_profile_counts_node_times_of_the_runs_after_warmup(tmp_path, monkeypatch):
    from backbones.export.onnx_profile import by_op_and_shapes, format_onnx_profile, profile_onnx
    monkeypatch.chdir(tmp_path)
    path = _tiny_onnx(tmp_path / 'tiny.onnx')
    p = profile_onnx(path, runs=3, warmup=1, threads=1)
    assert p.runs == 3 and len(p.run_ms) == 3 and all(ms > 0 for ms in p.run_ms)
    assert {n.name for n in p.nodes} == {'big_matmul', 'softmax', 'small_matmul'}
    big = next(n for n in p.nodes if n.name == 'big_matmul')
    assert big.op_type == 'MatMul' and big.inputs[0] == '[64, 256]'  # prepacked weights may go unlisted
    assert p.by_op_type().keys() == {'MatMul', 'Softmax'}
    assert sum(p.by_op_type().values()) == pytest.approx(p.node_ms)
    groups = by_op_and_shapes(p)   # the two MatMuls have other input shapes: three groups of one
    assert sorted(g['op_type'] for g in groups) == ['MatMul', 'MatMul', 'Softmax'] and {g['count'] for g in groups} == {1}
    # node times lie inside the runs they were counted in
    assert 0 < p.node_ms <= sum(p.run_ms) / len(p.run_ms)
    text = format_onnx_profile(p)
    assert '| MatMul |' in text and '| big_matmul | MatMul |' in text and '3 runs after the warm-up' in text
    assert sorted(f.name for f in tmp_path.iterdir()) == ['tiny.onnx']   # ORT's trace file is not left behind


def test_profile_onnx_cli_writes_tables_and_refuses_other_files(tmp_path, capsys):
    import json
    import os
    import sys
    sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), 'tools'))
    import benchmark as tool
    path = _tiny_onnx(tmp_path / 'tiny.onnx')
    assert tool.main(['--profile-onnx', path, '--threads', '1', '--runs', '2',
                      '--results-dir', str(tmp_path / 'results')]) == 0
    data = json.loads((tmp_path / 'results' / 'onnx_profile_tiny.json').read_text())
    assert data['runs'] == 2 and set(data['by_op_type']) == {'MatMul', 'Softmax'} and data['node_count'] == 3
    assert sum(g['count'] for g in data['by_op_and_shapes']) == 3
    assert '| big_matmul |' in (tmp_path / 'results' / 'onnx_profile_tiny.md').read_text()
    (tmp_path / 'model.pte').write_bytes(b'')
    assert tool.main(['--profile-onnx', str(tmp_path / 'model.pte'), '--results-dir', str(tmp_path / 'results')]) == 2
    assert 'not an .onnx file' in capsys.readouterr().err
    with pytest.raises(SystemExit):
        tool.main(['--profile-onnx', path, '--runs', '0'])
    # two exports of one name (an old and a new one, say) keep a report each, named by folder
    for folder in ('old', 'new'):
        (tmp_path / folder).mkdir()
        _tiny_onnx(tmp_path / folder / 'tiny.onnx')
    assert tool.main(['--profile-onnx', str(tmp_path / 'old' / 'tiny.onnx'), str(tmp_path / 'new' / 'tiny.onnx'),
                      '--threads', '1', '--runs', '1', '--results-dir', str(tmp_path / 'both')]) == 0
    assert sorted(f.name for f in (tmp_path / 'both').iterdir()) == [
        'onnx_profile_new_tiny.json', 'onnx_profile_new_tiny.md', 'onnx_profile_old_tiny.json', 'onnx_profile_old_tiny.md']
    # one name in two folders of one name: refused before anything runs or is written
    for parent in ('a', 'b'):
        (tmp_path / parent / 'export').mkdir(parents=True)
        _tiny_onnx(tmp_path / parent / 'export' / 'tiny.onnx')
    capsys.readouterr()
    assert tool.main(['--profile-onnx', str(tmp_path / 'a' / 'export' / 'tiny.onnx'),
                      str(tmp_path / 'b' / 'export' / 'tiny.onnx'), '--results-dir', str(tmp_path / 'clash')]) == 2
    assert 'separate --results-dir' in capsys.readouterr().err and not (tmp_path / 'clash').exists()


def test_end_to_end_table_splits_post_processing():
    """What the end-to-end graph adds (end to end less raw), and for Mask R-CNN the part
    besides its RoI heads (timed alone); one-stage models have no such part."""
    from backbones.export.benchmark import EndToEndTiming, format_end_to_end_table
    two = EndToEndTiming('mask-rcnn@rpn.max_per_img=300', 'two-stage', 'executorch', 1, (640, 640), 400.0, 1200.0, 5,
                         delegated_post_ms=200.0, raw_peak_mb=90.4, end_to_end_peak_mb=1100.0)
    one = EndToEndTiming('retinanet', 'one-stage', 'executorch', 1, (640, 640), 1000.0, 1100.0, 5)
    assert (two.post_ms, two.other_post_ms) == (800.0, 600.0) and two.other_post_share == pytest.approx(0.5)
    assert one.other_post_ms == one.post_ms == 100.0
    table = format_end_to_end_table([two, one], 'test machine')
    assert 'besides RoI heads ms' in table and 'test machine' in table
    assert ('| mask-rcnn@rpn.max_per_img=300 | 640x640 | executorch | 1 | 400.00 | 1200.00 | 800.00 | 66.7% | 600.00 '
            '| 50.0% | 90 / 1100 |') in table
    assert '| 1000.00 | 1100.00 | 100.00 | 9.1% | 100.00 | 9.1% | — / — |' in table  # memory not measured


def test_memory_plan_and_peak_memory_of_an_export(tmp_path):
    """Two portable operators each write a [1, 64, 256, 256] float tensor that lives until the
    next one has read it: the program plans both (2 x 16 MiB), and running it once in a fresh
    process raises the peak resident memory by that much, plus little."""
    from backbones.export.benchmark import peak_memory_mb
    from backbones.export.formats import write_executorch

    class TwoBuffers(torch.nn.Module):
        def forward(self, x):
            return torch.cumsum(x.repeat(1, 64, 1, 1), dim=1).sum(dim=(2, 3))

    x = torch.rand(1, 1, 256, 256)
    path = str(tmp_path / 'two_buffers.pte')
    written = write_executorch(TwoBuffers(), x, path)
    two_maps = 2 * 64 * 256 * 256 * 4
    assert two_maps <= written.planned_bytes <= two_maps + 4096
    peak = peak_memory_mb('executorch', path, x)
    assert two_maps / 1e6 <= peak <= two_maps / 1e6 + 32, peak
