"""backbones/demo/gpu_smoke.py: the record of mmcv's compiled ops, and the table."""
import importlib

import torch

from backbones.demo.gpu_smoke import SmokeResult, format_smoke, recording_mmcv_ops


def test_mmcv_ops_are_recorded_with_device_and_dtype_and_restored():
    from mmcv.ops import nms, roi_align
    ext = importlib.import_module('mmcv._ext')
    original = ext.nms
    boxes = torch.tensor([[0., 0., 10., 10.], [1., 1., 11., 11.], [20., 20., 30., 30.]])
    scores = torch.tensor([0.9, 0.8, 0.7])
    with recording_mmcv_ops() as calls:
        _, keep = nms(boxes, scores, 0.5)
        roi_align(torch.randn(1, 2, 8, 8, dtype=torch.float64), torch.tensor([[0., 1., 1., 5., 5.]],
                                                                             dtype=torch.float64), (2, 2))
    assert keep.tolist() == [0, 2]  # the op still computes
    assert calls == {'nms': {'cpu float32'}, 'roi_align_forward': {'cpu float64'}}
    assert ext.nms is original


def test_table_flags_ops_that_ran_on_the_cpu_of_a_cuda_run():
    ok = SmokeResult('a', 'a.py', 'cuda', True, 50, 2, median_ms=12.5, peak_mib=1500.4, last_loss=1.25,
                     mmcv_ops={'nms': ['cuda float32'], 'roi_align_forward': ['cpu float32', 'cuda float16']})
    failed = SmokeResult('b', 'b.py', 'cuda', True, 50, 2, error='OutOfMemoryError: CUDA out of memory')
    table = format_smoke([ok, failed])
    assert ('| a | cuda | float16 AMP | 2 | 50 | 12.5 | 1500 | 1.2500 | nms: cuda float32; roi_align_forward: '
            'cpu float32, cuda float16 |') in table
    assert '| b | cuda | float16 AMP | 2 | 50 | — | — | failed: OutOfMemoryError: CUDA out of memory | none |' in table
    assert table.splitlines()[-1] == 'a: mmcv op roi_align_forward ran on the CPU'
    assert ok.ok and not failed.ok and not SmokeResult('c', 'c.py', 'cpu', False, 2, 2, last_loss=float('nan')).ok
