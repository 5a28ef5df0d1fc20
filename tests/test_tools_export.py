"""tools/export.py behaviour (issue 11): random-weights warning, existing files kept unless
--force, a failing format reported while the others run, non-zero exit status."""
import importlib.util

import pytest

from backbones.export.formats import FORMATS, Format

from .conftest import ROOT

pytest.importorskip('onnxruntime')


def _tool():
    spec = importlib.util.spec_from_file_location('export_tool', ROOT / 'tools' / 'export.py')
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _broken(module, example, path):
    raise RuntimeError('this format is broken on purpose')


@pytest.mark.slow
def test_export_tool_behaviour(tmp_path, monkeypatch, capsys):
    tool = _tool()
    main = tool.main
    monkeypatch.setitem(FORMATS, 'broken', Format('broken', '.broken', 'export', 'torch', _broken))
    # the tool checks --formats against its torch-free copy of the names
    monkeypatch.setattr(tool, 'FORMATS', tool.FORMATS + ('broken',))
    args = ['efficientformerv2_s0', '--size', '64', '64', '--out-dir', str(tmp_path)]
    with pytest.warns(UserWarning, match='random weights'):
        status = main(args + ['--formats', 'broken', 'onnx'])
    out = capsys.readouterr().out
    assert status != 0
    assert 'broken' in out and 'FAILED' in out and 'broken on purpose' in out
    onnx_file = tmp_path / 'efficientformerv2_s0_64x64.onnx'
    assert onnx_file.exists()  # the other format still ran
    mtime = onnx_file.stat().st_mtime_ns
    with pytest.warns(UserWarning, match='random weights'):
        assert main(args + ['--formats', 'onnx']) == 0
    assert 'kept existing' in capsys.readouterr().out and onnx_file.stat().st_mtime_ns == mtime
    with pytest.warns(UserWarning, match='random weights'):
        assert main(args + ['--formats', 'onnx', '--force']) == 0
    assert onnx_file.stat().st_mtime_ns != mtime
