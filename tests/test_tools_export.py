"""tools/export.py: random-weights warning, existing files kept unless --force, a failing
format reported while the others run, non-zero exit status; argument errors answered before
torch is imported."""
import os
import subprocess
import sys

import pytest

from backbones.export.formats import FORMATS, Format

from .conftest import ROOT, load_tool, usage_error


def _broken(module, example, path):
    raise RuntimeError('this format is broken on purpose')


@pytest.mark.slow
def test_export_tool_behaviour(tmp_path, monkeypatch, capsys):
    pytest.importorskip('onnxruntime')
    tool = load_tool('export')
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



def test_export_size_too_small_names_the_size_not_resolution():
    from backbones.export.targets import build_target
    for size in ((16, 16), (16, 64), (0, 0), (-32, 32)):
        with pytest.raises(ValueError, match='too small.*at least 32') as err:
            build_target('efficientformerv2_s0', size)
        assert 'resolution' not in str(err.value)


def test_export_tool_argument_errors(tmp_path, capsys):
    main = load_tool('export').main
    assert '--size 0 0: height and width must be positive' in usage_error(main, ['edgevit_xxs', '--size', '0', '0'],
                                                                             capsys)
    assert 'must be positive' in usage_error(main, ['edgevit_xxs', '--size', '-8', '64'], capsys)
    assert 'at least 32 pixels' in usage_error(main, ['efficientformerv2_s0', '--size', '16', '16'], capsys)
    assert '--checkpoint' in usage_error(main, ['edgevit_xxs', '--checkpoint', str(tmp_path / 'no.pth')], capsys)
    err = usage_error(main, ['edgevit_xxs', '--cfg-options', 'model.test_cfg.rcnn.max_per_img=20'], capsys)
    assert '--cfg-options: edgevit_xxs is a backbone name' in err and 'config file' in err
    blocker = tmp_path / 'a_file'
    blocker.write_text('')
    err = usage_error(main, ['edgevit_xxs', '--out-dir', str(blocker / 'export')], capsys)
    assert f'--out-dir {blocker / "export"}: cannot write there' in err and 'choose a folder you can write' in err


@pytest.mark.skipif(os.geteuid() == 0, reason='root writes into read-only folders')
def test_export_tool_read_only_out_dir(tmp_path, capsys):
    locked = tmp_path / 'locked'
    locked.mkdir(mode=0o500)
    err = usage_error(load_tool('export').main, ['edgevit_xxs', '--out-dir', str(locked / 'export')], capsys)
    assert 'cannot write there' in err and str(locked) in err


def test_export_tool_formats_match_the_library():
    import backbones.export.formats as formats
    import backbones.export.targets as targets
    tool = load_tool('export')
    assert tool.FORMATS == tuple(formats.FORMATS) and tool.MIN_SIDE == targets.MIN_SIDE


def test_export_tool_help_and_argument_errors_import_no_torch():
    probe = ("import runpy, sys\n"
             "sys.argv = ['tools/export.py'] + sys.argv[1:]\n"
             "try:\n"
             "    runpy.run_path('tools/export.py', run_name='__main__')\n"
             "except SystemExit as e:\n"
             "    code = e.code\n"
             "print('RESULT', code, *[m in sys.modules for m in ('torch', 'mmdet', 'executorch', 'backbones')])\n")
    for args, code in ((['--help'], 0), (['edgevit_xxs', '--size', '0', '0'], 2), (['x', '--formats', 'tflit'], 2)):
        run = subprocess.run([sys.executable, '-c', probe, *args], capture_output=True, text=True, cwd=str(ROOT),
                             timeout=60)
        line = [ln for ln in run.stdout.splitlines() if ln.startswith('RESULT')][-1].split()
        assert line[1:] == [str(code), 'False', 'False', 'False', 'False'], (args, run.stdout[-2000:],
                                                                           run.stderr[-2000:])
    assert 'executorch-int8' in run.stderr  # the format choices are listed without importing torch


def test_force_never_replaces_a_folder_that_is_not_an_export(tmp_path, capsys):
    """A folder under the export's file name is refused, with the others formats' results as
    usual; nothing in it is touched."""
    keep = tmp_path / 'efficientformerv2_s0_64x64.onnx'
    keep.mkdir()
    (keep / 'notes.txt').write_text('mine')
    with pytest.warns(UserWarning, match='random weights'):
        status = load_tool('export').main(['efficientformerv2_s0', '--size', '64', '64', '--formats', 'onnx',
                                           '--out-dir', str(tmp_path), '--force'])
    out = capsys.readouterr().out
    assert status == 1 and 'refused' in out and 'is a folder, not an earlier export' in out
    assert (keep / 'notes.txt').read_text() == 'mine' and sorted(os.listdir(tmp_path)) == [keep.name]
