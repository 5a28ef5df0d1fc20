"""tools/gpu_smoke.py: a few iterations of each model at a tiny size, its table and its
provenance (on a machine without CUDA it trains on the CPU in float32 and says so)."""
import json
import math

import pytest
import torch

from .conftest import load_tool


@pytest.mark.slow
def test_smoke_trains_each_model_and_writes_its_table(tmp_path, capsys):
    tool = load_tool('gpu_smoke')
    results = tmp_path / 'results'
    status = tool.main(['--iters', '2', '--size', '64', '--workers', '0', '--work-dir', str(tmp_path / 'work'),
                        '--results-dir', str(results)])
    assert status == 0, capsys.readouterr()
    cuda = torch.cuda.is_available()
    text = (results / 'gpu_smoke.md').read_text()
    assert text.startswith('`tools/gpu_smoke.py --iters 2 --size 64')
    assert ('No CUDA device: trained on the CPU in float32' in text) != cuda
    data = json.loads((results / 'gpu_smoke.json').read_text())
    rows = {r['name']: r for r in data['results']}
    assert set(rows) == set(tool.MODELS)
    for name, row in rows.items():
        assert row['device'] == ('cuda' if cuda else 'cpu') and row['amp'] == cuda and row['error'] is None
        assert row['iters'] == 2 and row['median_ms'] > 0 and math.isfinite(row['last_loss'])
        assert (row['peak_mib'] is not None) == cuda
        assert f'| {name} | {row["device"]} |' in text
    device = 'cuda' if cuda else 'cpu'
    ops = rows['mask-rcnn_efficientformerv2-s0']['mmcv_ops']
    assert {'nms', 'roi_align_forward', 'roi_align_backward'} <= set(ops)
    assert all(where.startswith(device) for op in ops.values() for where in op)
    assert rows['fpn_edgevit-xxs']['mmcv_ops'] == {}
    assert rows['edgevit-xxs_in1k']['batch_size'] == 32 and rows['edgevit-xxs_in1k']['mmcv_ops'] == {}


def test_arguments_are_checked(capsys):
    from .conftest import usage_error
    main = load_tool('gpu_smoke').main
    assert '--size 32: give at least 64 pixels' in usage_error(main, ['--size', '32'], capsys)
    assert 'invalid choice' in usage_error(main, ['--models', 'yolo'], capsys)
    assert '--workers -1' in usage_error(main, ['--workers', '-1'], capsys)
