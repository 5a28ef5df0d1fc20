"""Silent wrong results and confusing errors: each case ends in the right result or an error
that names the problem and the fix (issue 9)."""
import importlib.util
import json
import math
import os
import subprocess
import sys
import time

import cv2
import pytest
import torch

from backbones import EdgeViT, EfficientFormerV2
from backbones.demo import dataset as synthetic
from backbones.demo.dataset import make_dataset

from .conftest import ROOT

SEG_CONFIG = str(ROOT / 'configs' / 'segmentation' / 'fpn_edgevit-xxs_8xb4-40k_ade20k-512x512.py')
DET_CONFIG = str(ROOT / 'configs' / 'detection' / 'retinanet_edgevit-xxs_fpn_8xb2-1x_coco.py')
FAMILIES = [(EdgeViT, dict(arch='xxs')), (EfficientFormerV2, dict(arch='s0', resolution=64))]


def _tool(name):
    spec = importlib.util.spec_from_file_location(f'_tool_{name}', ROOT / 'tools' / f'{name}.py')
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _usage_error(main, argv, capsys):
    """Run a tool's main; it must stop with argparse's usage error; returns the message."""
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    assert exit_info.value.code == 2
    return capsys.readouterr().err


# ---------------------------------------------------------------- backbones
@pytest.mark.parametrize('cls,kwargs', FAMILIES)
def test_out_indices_come_in_the_order_of_out_channels(cls, kwargs):
    with pytest.raises(ValueError, match=r'not in ascending order.*out_indices=\(0, 3\)'):
        cls(out_indices=(3, 0), **kwargs)
    with pytest.raises(ValueError, match='out_indices is empty'):
        cls(out_indices=(), **kwargs)
    with pytest.raises(ValueError, match='ints'):
        cls(out_indices=(0, 1.0), **kwargs)
    model = cls(out_indices=(0, -1), **kwargs).eval()
    outs = model(torch.rand(1, 3, 64, 64))
    assert model.out_channels == tuple(o.shape[1] for o in outs) == (model.stage_channels[0], model.stage_channels[3])


@pytest.mark.parametrize('cls,kwargs', FAMILIES)
def test_an_empty_batch_gives_empty_features(cls, kwargs):
    model = cls(**kwargs)
    for mode in (False, True):
        outs = model.train(mode)(torch.rand(0, 3, 64, 64))
        assert [tuple(o.shape) for o in outs] == [(0, c, 64 // s, 64 // s)
                                                  for c, s in zip(model.stage_channels, model.strides)]
    assert all(torch.isfinite(b).all() for b in model.buffers() if b.is_floating_point())


@pytest.mark.parametrize('cls,kwargs', FAMILIES)
def test_frozen_stages_and_drop_path_rate_are_checked(cls, kwargs):
    with pytest.raises(ValueError, match=r'frozen_stages must be an integer in \[-1, 4\].*got 1.5'):
        cls(frozen_stages=1.5, **kwargs)
    for rate in (1.0, -0.1, math.nan, '0.1'):
        with pytest.raises(ValueError, match=r'drop_path_rate must be a number in \[0, 1\)'):
            cls(drop_path_rate=rate, **kwargs)
    cls(drop_path_rate=0.3, frozen_stages=1, **kwargs)


def test_edgevit_width_below_head_dim():
    arch = dict(depths=(1, 1, 1, 1), widths=(16, 32, 64, 128), head_dim=32, mlp_ratio=4., sr_ratios=(4, 2, 2, 1),
                qkv_bias=True)
    with pytest.raises(ValueError, match='no attention head.*multiple of head_dim'):
        EdgeViT(arch)
    EdgeViT(dict(arch, head_dim=16))


# ---------------------------------------------------------------- export
def test_export_size_too_small_names_the_size_not_resolution():
    from backbones.export.targets import build_target
    for size in ((16, 16), (16, 64), (0, 0), (-32, 32)):
        with pytest.raises(ValueError, match='too small.*at least 32') as err:
            build_target('efficientformerv2_s0', size)
        assert 'resolution' not in str(err.value)


def test_export_tool_argument_errors(tmp_path, capsys):
    main = _tool('export').main
    assert '--size 0 0: height and width must be positive' in _usage_error(main, ['edgevit_xxs', '--size', '0', '0'],
                                                                             capsys)
    assert 'must be positive' in _usage_error(main, ['edgevit_xxs', '--size', '-8', '64'], capsys)
    assert 'at least 32 pixels' in _usage_error(main, ['efficientformerv2_s0', '--size', '16', '16'], capsys)
    assert '--checkpoint' in _usage_error(main, ['edgevit_xxs', '--checkpoint', str(tmp_path / 'no.pth')], capsys)
    err = _usage_error(main, ['edgevit_xxs', '--cfg-options', 'model.test_cfg.rcnn.max_per_img=20'], capsys)
    assert '--cfg-options: edgevit_xxs is a backbone name' in err and 'config file' in err
    blocker = tmp_path / 'a_file'
    blocker.write_text('')
    err = _usage_error(main, ['edgevit_xxs', '--out-dir', str(blocker / 'export')], capsys)
    assert f'--out-dir {blocker / "export"}: cannot write there' in err and 'choose a folder you can write' in err


@pytest.mark.skipif(os.geteuid() == 0, reason='root writes into read-only folders')
def test_export_tool_read_only_out_dir(tmp_path, capsys):
    locked = tmp_path / 'locked'
    locked.mkdir(mode=0o500)
    err = _usage_error(_tool('export').main, ['edgevit_xxs', '--out-dir', str(locked / 'export')], capsys)
    assert 'cannot write there' in err and str(locked) in err


def test_export_tool_formats_match_the_library():
    import backbones.export.formats as formats
    import backbones.export.targets as targets
    tool = _tool('export')
    assert tool.FORMATS == tuple(formats.FORMATS) and tool.MIN_SIDE == targets.MIN_SIDE


def test_export_tool_help_and_argument_errors_import_no_torch():
    probe = ("import runpy, sys, time\n"
             "start = time.time()\n"
             "sys.argv = ['tools/export.py'] + sys.argv[1:]\n"
             "try:\n"
             "    runpy.run_path('tools/export.py', run_name='__main__')\n"
             "except SystemExit as e:\n"
             "    code = e.code\n"
             "print('RESULT', code, 'torch' in sys.modules, round(time.time() - start, 2))\n")
    for args, code in ((['--help'], 0), (['edgevit_xxs', '--size', '0', '0'], 2), (['x', '--formats', 'tflit'], 2)):
        start = time.time()
        run = subprocess.run([sys.executable, '-c', probe, *args], capture_output=True, text=True, cwd=str(ROOT),
                             timeout=60)
        line = [ln for ln in run.stdout.splitlines() if ln.startswith('RESULT')][-1].split()
        assert line[1:3] == [str(code), 'False'], (args, run.stdout[-2000:], run.stderr[-2000:])
        assert time.time() - start < 10  # no torch / mmdet / executorch import (those take ~25 s)
    assert 'executorch-int8' in run.stderr  # the format choices are listed without importing torch


# ---------------------------------------------------------------- demo
def test_demo_tool_argument_errors(tmp_path, capsys):
    main = _tool('demo').main
    work = ['--work-dir', str(tmp_path / 'demo')]
    assert '--seed -1' in _usage_error(main, ['--seed', '-1'] + work, capsys)
    err = _usage_error(main, ['--det-config', SEG_CONFIG, '--seg-config', 'none'] + work, capsys)
    assert 'is a segmentation config (for --seg-config)' in err and 'configs/detection/' in err
    err = _usage_error(main, ['--det-config', 'none', '--seg-config', DET_CONFIG] + work, capsys)
    assert 'is a detection config (for --det-config)' in err and 'configs/segmentation/' in err
    blocker = tmp_path / 'a_file'
    blocker.write_text('')
    err = _usage_error(main, ['--work-dir', str(blocker / 'demo')], capsys)
    assert f'--work-dir {blocker / "demo"}: cannot write there' in err
    err = _usage_error(main, ['--data-root', str(blocker / 'data')] + work, capsys)
    assert f'--data-root {blocker / "data"}: cannot write there' in err


def test_run_demo_checks_configs_before_generating_data(tmp_path):
    from backbones.demo.job import run_demo
    with pytest.raises(ValueError, match='is a detection config'):
        run_demo(work_dir=str(tmp_path / 'demo'), det_config=None, seg_config=DET_CONFIG)
    assert not (tmp_path / 'demo' / 'data').exists()


# ---------------------------------------------------------------- built-in dataset
def _files(folder):
    return sorted(os.path.relpath(os.path.join(d, f), folder) for d, _, fs in os.walk(folder) for f in fs)


def test_regenerating_with_other_sizes_leaves_no_stale_images(tmp_path):
    root = tmp_path / 'data'
    make_dataset(str(root), num_train=4, num_val=2, size=(64, 64), seed=0)
    (root / 'notes.txt').write_text('mine')
    roots = make_dataset(str(root), num_train=2, num_val=1, size=(48, 80), seed=0)
    fresh = tmp_path / 'fresh'
    make_dataset(str(fresh), num_train=2, num_val=1, size=(48, 80), seed=0)
    assert _files(root / 'coco') == _files(fresh / 'coco') and _files(root / 'ade') == _files(fresh / 'ade')
    images = os.listdir(os.path.join(roots['ade'], 'images', 'training'))
    assert len(images) == 2
    assert all(cv2.imread(os.path.join(roots['ade'], 'images', 'training', i)).shape[:2] == (48, 80) for i in images)
    assert json.loads((root / 'dataset.json').read_text())['size'] == [48, 80]
    assert (root / 'notes.txt').read_text() == 'mine'  # not the dataset's: kept
    assert not [n for n in os.listdir(root) if n.startswith('.make_dataset-')]


def test_an_interrupted_generation_is_never_taken_for_complete(tmp_path, monkeypatch):
    root = tmp_path / 'data'
    make_dataset(str(root), num_train=2, num_val=1, size=(64, 64), seed=0)
    before = _files(root)

    def interrupted(*args, **kwargs):
        os.makedirs(os.path.join(args[0], 'train2017'))
        raise KeyboardInterrupt

    monkeypatch.setattr(synthetic, '_write_dataset', interrupted)
    with pytest.raises(KeyboardInterrupt):
        make_dataset(str(root), num_train=3, num_val=1, size=(64, 64), seed=0)
    assert _files(root) == before  # the previous dataset, complete and recorded, is untouched
    monkeypatch.undo()
    # a root whose record is missing (a swap cut short) is rebuilt, not reused
    (root / 'dataset.json').unlink()
    (root / '.make_dataset-left').mkdir()
    make_dataset(str(root), num_train=3, num_val=1, size=(64, 64), seed=0)
    assert len(os.listdir(root / 'coco' / 'train2017')) == 3 and (root / 'dataset.json').exists()
    assert not (root / '.make_dataset-left').exists()


def test_foreign_dataset_folders_are_refused(tmp_path):
    root = tmp_path / 'data'
    (root / 'coco').mkdir(parents=True)
    (root / 'coco' / 'real.jpg').write_bytes(b'')
    with pytest.raises(FileExistsError, match='was not written by make_dataset.*Choose an empty folder'):
        make_dataset(str(root), num_train=2, num_val=1, size=(64, 64))
    assert (root / 'coco' / 'real.jpg').exists()


def test_make_dataset_arguments_are_checked(tmp_path):
    with pytest.raises(ValueError, match='seed must be an integer >= 0'):
        make_dataset(str(tmp_path), seed=-1)
    with pytest.raises(ValueError, match='at least 32 pixels'):
        make_dataset(str(tmp_path), size=(0, 64))
    assert not os.listdir(tmp_path)
