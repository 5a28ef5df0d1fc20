"""The main job, end to end at a tiny size (the defaults are what `bash tools/run.sh` runs)."""
import json
import os

import pytest

from backbones.demo.job import format_results, run_demo

from .conftest import DEMO_DET_CONFIG, DEMO_SEG_CONFIG


@pytest.mark.slow
def test_demo_end_to_end_tiny(tmp_path):
    results = run_demo(work_dir=str(tmp_path), det_config=DEMO_DET_CONFIG, seg_config=DEMO_SEG_CONFIG, num_train=6,
                       num_val=2, size=64, det_iters=2, seg_iters=2, batch_size=2, num_vis=2)
    det, seg = results['detection'], results['segmentation']
    assert {'coco/bbox_mAP', 'coco/bbox_mAP_50', 'coco/segm_mAP'} <= det['metrics'].keys()
    assert {'mIoU', 'aAcc'} <= seg['metrics'].keys()
    for r in (det, seg):
        assert os.path.isfile(r['checkpoint']) and os.path.isfile(r['config'])
    assert os.path.getsize(results['predictions_png']) > 1000
    with open(tmp_path / 'results.json') as f:
        assert json.load(f)['dataset']['num_train'] == 6
    text = format_results(results)
    assert 'bbox AP50' in text and 'mIoU' in text and 'predictions' in text
    # the trained models (Mask R-CNN with its RoI stage in the graph, Semantic FPN) exported end
    # to end and evaluated through the runner score as eager does (within 0.002;
    # mmseg reports percent): bbox and mask AP alike
    assert det['exports'] and seg['exports']
    for r, scale in ((det, 1), (seg, 100)):
        for fmt, info in r['exports'].items():
            assert 'metrics' in info, info
            for key, value in r['metrics'].items():
                if key in info['metrics'] and isinstance(value, float):
                    assert r is seg or 'coco/segm_mAP' in info['metrics']
                    assert abs(info['metrics'][key] - value) <= 0.002 * scale, (fmt, key)
            # each export's latency through the runner, printed beside its metrics
            assert 0 < info['ms_median'] <= info['ms_p90'], (fmt, info)
    assert 'onnx' in text and 'ms / image' in text
