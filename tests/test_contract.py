"""backbones.export.contract: end-to-end exports (uint8 image in; boxes / scores / labels or
seg_map out) equal mmdet's / mmseg's predict, eager, in ONNX and in ExecuTorch, and through
the runner on a trained detector."""
import pytest
import torch

from backbones.export.contract import end_to_end
from backbones.export.prepare import prepare_for_export
from backbones.export.targets import DenseDetector, SegmentorLogits, Target
from backbones.runtime.models import build_model_from_config, image_meta

from .conftest import ROOT

SIZE = (128, 160)
DET = ROOT / 'configs' / 'detection'
SEG = ROOT / 'configs' / 'segmentation'


def _retinanet(config):
    model, _ = build_model_from_config(str(DET / config))
    with torch.no_grad():
        # random weights with scores spread so that hundreds of (anchor, class) pairs pass the
        # 0.05 threshold and NMS has plenty to suppress; no ties
        model.bbox_head.retina_cls.weight.mul_(0.05)
        model.bbox_head.retina_cls.bias.fill_(-2.8)
    model.eval()
    target = Target('retinanet', DenseDetector(prepare_for_export(model, SIZE)).eval(), SIZE, model, 'retinanet')
    return model, end_to_end(target)


def _image(seed=0):
    return torch.randint(0, 256, (1, *SIZE, 3), dtype=torch.uint8, generator=torch.Generator().manual_seed(seed))


def _mmdet_predict(model, image, size=SIZE):
    """mmdet's predict (the config's ``test_cfg``) on a uint8 ``[1, H, W, 3]`` RGB image of ``size``."""
    from mmdet.structures import DetDataSample
    mean = torch.tensor([123.675, 116.28, 103.53]).view(1, 3, 1, 1)
    std = torch.tensor([58.395, 57.12, 57.375]).view(1, 3, 1, 1)
    x = (image.permute(0, 3, 1, 2).float() - mean) / std
    with torch.no_grad():
        return model.predict(x, [DetDataSample(metainfo=image_meta(size))], rescale=True)[0].pred_instances


def _box_iou(a, b):
    lt = torch.maximum(a[:, :2], b[:, :2])
    rb = torch.minimum(a[:, 2:], b[:, 2:])
    inter = (rb - lt).clamp(min=0).prod(1)
    area = lambda x: (x[:, 2:] - x[:, :2]).prod(1)  # noqa: E731
    return inter / (area(a) + area(b) - inter)


def match_detections(boxes, scores, labels, expected):
    """Match each detection one to one with an expected one of the same label, box IoU >= 0.99
    and score within 1e-3 (near-tied scores, 1e-6 apart after XNNPACK's arithmetic, may swap
    places). Returns (pairs (i, j), min IoU, max score difference)."""
    k = len(labels)
    ious = _box_iou(boxes[:, None].expand(-1, k, -1).reshape(-1, 4),
                    expected.bboxes[None].expand(k, -1, -1).reshape(-1, 4)).reshape(k, k)
    diffs = (scores[:, None] - expected.scores[None]).abs()
    ok = (labels[:, None].long() == expected.labels[None]) & (ious >= 0.99) & (diffs <= 1e-3)
    taken = torch.zeros(k, dtype=torch.bool)
    pairs, iou, score_diff = [], 1.0, 0.0
    for i in range(k):
        candidates = torch.nonzero(ok[i] & ~taken)[:, 0]
        assert len(candidates), f'detection {i} has no match'
        j = int(candidates[diffs[i, candidates].argmin()])
        taken[j] = True
        pairs.append((i, j))
        iou, score_diff = min(iou, ious[i, j].item()), max(score_diff, diffs[i, j].item())
    return pairs, iou, score_diff


def check_detections(outputs, expected):
    """Same count, equal labels, box IoU >= 0.99, scores within 1e-3; padding rows empty.
    Returns (count, min IoU, max score difference)."""
    boxes, scores, labels = [torch.as_tensor(o) for o in outputs]
    k = int((labels >= 0).sum())
    assert k == len(expected) > 0
    pairs, iou, score_diff = match_detections(boxes[:k], scores[:k], labels[:k], expected)
    assert (scores[k:] == 0).all() and (labels[k:] == -1).all()
    return k, iou, score_diff


@pytest.mark.parametrize('config', ['retinanet_edgevit-xxs_fpn_8xb2-1x_coco.py',
                                    'retinanet_efficientformerv2-s0_fpn_8xb2-1x_coco.py'])
def test_retinanet_end_to_end_eager_equals_mmdet_predict(config):
    model, target = _retinanet(config)
    image = _image()
    expected = _mmdet_predict(model, image)
    with torch.no_grad():
        boxes, scores, labels = target.module(image)
    assert boxes.shape == (100, 4) and scores.shape == (100,) and labels.dtype == torch.int64
    print(check_detections((boxes, scores, labels), expected))


def _candidates(model, image):
    """How many (anchor, class) pairs pass the score threshold before NMS."""
    mean = torch.tensor([123.675, 116.28, 103.53]).view(1, 3, 1, 1)
    std = torch.tensor([58.395, 57.12, 57.375]).view(1, 3, 1, 1)
    with torch.no_grad():
        cls, _ = model.bbox_head(model.neck(model.backbone((image.permute(0, 3, 1, 2).float() - mean) / std)))
    return sum(int((c.sigmoid() > 0.05).sum()) for c in cls)


@pytest.mark.slow
@pytest.mark.parametrize('config,fmt', [('retinanet_edgevit-xxs_fpn_8xb2-1x_coco.py', 'executorch'),
                                        ('retinanet_efficientformerv2-s0_fpn_8xb2-1x_coco.py', 'onnx')])
def test_retinanet_end_to_end_export_equals_mmdet_predict(config, fmt, tmp_path):
    """Each backbone once and each runtime once (the eager test above covers both backbones;
    the post-processing lowered is the same for both): a RetinaNet export takes minutes."""
    pytest.importorskip('executorch' if fmt == 'executorch' else 'onnxruntime')
    from backbones.export.contract import export_end_to_end, read_metadata
    from backbones.export.formats import run_exported
    model, target = _retinanet(config)
    target.meta['config'] = config
    image = _image()
    assert _candidates(model, image) > 300  # NMS really suppresses: 100 kept of hundreds
    result = export_end_to_end(target, fmt, str(tmp_path), example=image)
    outputs = run_exported(result.path, image)
    assert [tuple(o.shape) for o in outputs] == [(100, 4), (100,), (100,)]
    assert [o.dtype for o in outputs] == [torch.float32, torch.float32, torch.int64]
    count, min_iou, score_diff = check_detections(outputs, _mmdet_predict(model, image))
    print(f'{config} {fmt}: {count} detections, min IoU {min_iou:.5f}, max score diff {score_diff:.1e}; '
          + result.describe())
    meta = read_metadata(result.path)
    assert meta['task'] == 'detection' and len(meta['classes']) == 80 and meta['input_size'] == list(SIZE)
    assert meta['color_order'] == 'RGB' and meta['mean'] == [123.675, 116.28, 103.53] and meta['score_threshold'] == 0.05
    assert meta['config'] == config and meta['weights'] == 'random' and 'edgeformers_version' in meta
    if fmt == 'onnx':
        import onnx
        assert [o.name for o in onnx.load(result.path).graph.output] == ['boxes', 'scores', 'labels']
    else:
        # the network is delegated; what runs on portable kernels is the post-processing
        # (top-k, gathers, the NMS iteration) and the FPN's nearest upsampling
        assert 'aten.convolution.default' not in result.not_delegated


@pytest.mark.slow
@pytest.mark.parametrize('fmt', ['onnx', 'executorch'])
def test_segmentor_seg_map_equals_mmseg_predict(fmt, tmp_path):
    pytest.importorskip('executorch' if fmt == 'executorch' else 'onnxruntime')
    from mmseg.structures import SegDataSample
    from backbones.export.contract import export_end_to_end, read_metadata
    from backbones.export.formats import run_exported
    model, _ = build_model_from_config(str(SEG / 'fpn_edgevit-xxs_8xb4-40k_ade20k-512x512.py'))
    model.eval()
    target = end_to_end(Target('fpn', SegmentorLogits(prepare_for_export(model, SIZE)).eval(), SIZE, model,
                               'segmentor'))
    image = _image(1)
    result = export_end_to_end(target, fmt, str(tmp_path), example=image)
    (seg_map,) = run_exported(result.path, image)
    assert seg_map.dtype == torch.uint8 and seg_map.shape == (1, *SIZE)
    mean = torch.tensor([123.675, 116.28, 103.53]).view(1, 3, 1, 1)
    std = torch.tensor([58.395, 57.12, 57.375]).view(1, 3, 1, 1)
    x = (image.permute(0, 3, 1, 2).float() - mean) / std
    meta = dict(img_shape=SIZE, ori_shape=SIZE, pad_shape=SIZE, padding_size=[0, 0, 0, 0])
    with torch.no_grad():
        logits = model.predict(x, [SegDataSample(metainfo=meta)])[0].seg_logits.data
    agree = (seg_map[0].long() == logits.argmax(0)).float().mean().item()
    print(f'segmentor {fmt}: seg_map agrees with argmax of mmseg logits on {agree:.4%} of pixels; '
          + result.describe())
    assert agree >= 0.999
    meta = read_metadata(result.path)
    assert meta['task'] == 'segmentation' and len(meta['classes']) == 150 and meta['outputs'] == ['seg_map']


@pytest.mark.slow
def test_trained_retinanet_export_equals_mmdet_predict(tmp_path):
    """On a trained detector (EdgeViT-XXS RetinaNet trained by the main job on the built-in
    data): scores as training spreads them, hundreds of candidates per image, most suppressed.
    The ONNX export, run through the runner (backbones/export/runner.py) on each validation image as an app reads
    it, gives mmdet's detections of the same pixels, and the job reports the same metrics."""
    import numpy as np
    from PIL import Image
    from backbones.export import runner
    from backbones.demo.job import run_demo
    from backbones.export.targets import build_target
    results = run_demo(work_dir=str(tmp_path), det_config=str(DET / 'retinanet_edgevit-xxs_fpn_8xb2-1x_coco.py'),
                       seg_config=None, num_train=16, num_val=3, size=96, det_iters=20, batch_size=4, num_vis=0,
                       export_formats=('onnx',))
    det = results['detection']
    size = (96, 96)
    model = build_target(det['config'], size, det['checkpoint']).full_model.eval()
    exported = runner.load_model(det['exports']['onnx']['path'])
    images = sorted((tmp_path / 'data' / 'coco' / 'val2017').glob('*.jpg'))
    assert len(images) == 3
    for path in images:
        pixels = np.asarray(Image.open(path).convert('RGB'))
        image = torch.from_numpy(pixels.copy())[None]
        expected = _mmdet_predict(model, image, size)
        assert _candidates(model, image) > 1000  # trained scores: NMS removes most of them
        pred = runner.predict(exported, pixels)
        k = len(pred['scores'])
        pad = 100 - k
        outputs = (torch.cat([torch.as_tensor(np.asarray(pred['boxes'], np.float32)).reshape(-1, 4), torch.zeros(pad, 4)]),
                   torch.cat([torch.as_tensor(np.asarray(pred['scores'], np.float32)), torch.zeros(pad)]),
                   torch.cat([torch.as_tensor(np.asarray(pred['labels'], np.int64)), torch.full((pad,), -1)]))
        print(path.name, check_detections(outputs, expected))
    for key, value in det['metrics'].items():
        assert abs(det['exports']['onnx']['metrics'][key] - value) <= 0.002, key
