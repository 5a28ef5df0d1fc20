"""backbones.benchmark.onnx_profile: ONNX Runtime's own per-node times, and
tools/benchmark.py --profile-onnx."""
import json
import sys

import pytest

from .conftest import ROOT

pytest.importorskip('onnxruntime')


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
    from backbones.benchmark.onnx_profile import by_op_and_shapes, format_onnx_profile, profile_onnx
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
    sys.path.insert(0, str(ROOT / 'tools'))
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
