"""tools/demo.py and run_demo: argument errors name the option and the fix before anything
is generated or trained."""
import pytest

from .conftest import ROOT, load_tool, usage_error

SEG_CONFIG = str(ROOT / 'configs' / 'segmentation' / 'fpn_edgevit-xxs_8xb4-40k_ade20k-512x512.py')
DET_CONFIG = str(ROOT / 'configs' / 'detection' / 'retinanet_edgevit-xxs_fpn_8xb2-1x_coco.py')


def test_demo_tool_argument_errors(tmp_path, capsys):
    main = load_tool('demo').main
    work = ['--work-dir', str(tmp_path / 'demo')]
    assert '--seed -1' in usage_error(main, ['--seed', '-1'] + work, capsys)
    err = usage_error(main, ['--det-config', SEG_CONFIG, '--seg-config', 'none'] + work, capsys)
    assert 'is a segmentation config (for --seg-config)' in err and 'configs/detection/' in err
    err = usage_error(main, ['--det-config', 'none', '--seg-config', DET_CONFIG] + work, capsys)
    assert 'is a detection config (for --det-config)' in err and 'configs/segmentation/' in err
    blocker = tmp_path / 'a_file'
    blocker.write_text('')
    err = usage_error(main, ['--work-dir', str(blocker / 'demo')], capsys)
    assert f'--work-dir {blocker / "demo"}: cannot write there' in err
    err = usage_error(main, ['--data-root', str(blocker / 'data')] + work, capsys)
    assert f'--data-root {blocker / "data"}: cannot write there' in err


def test_run_demo_checks_configs_before_generating_data(tmp_path):
    from backbones.demo.job import run_demo
    with pytest.raises(ValueError, match='is a detection config'):
        run_demo(work_dir=str(tmp_path / 'demo'), det_config=None, seg_config=DET_CONFIG)
    assert not (tmp_path / 'demo' / 'data').exists()
