"""Issue 11: end-to-end exports (uint8 image in; boxes / scores / labels or seg_map out) equal
mmdet's / mmseg's predict; the fixed-point NMS equals greedy NMS."""
import pytest
import torch

from backbones.export.contract import end_to_end
from backbones.export.postprocess import fixed_point_nms, greedy_nms
from backbones.export.prepare import prepare_for_export
from backbones.export.targets import DenseDetector, SegmentorLogits, Target
from backbones.runtime.models import build_model_from_config, image_meta

from .conftest import ROOT

SIZE = (128, 160)
DET = ROOT / 'configs' / 'detection'
SEG = ROOT / 'configs' / 'segmentation'


def _random_boxes(n, seed, spread=60.0, size=20.0):
    g = torch.Generator().manual_seed(seed)
    xy = torch.rand(n, 2, generator=g) * spread
    wh = 2 + torch.rand(n, 2, generator=g) * size
    return torch.cat([xy, xy + wh], 1), torch.rand(n, generator=g)


@pytest.mark.parametrize('seed', range(6))
def test_fixed_point_nms_equals_greedy(seed):
    """Many overlapping boxes, several classes, some invalid: the fixed point equals
    torchvision's batched (class-wise) greedy NMS."""
    torchvision = pytest.importorskip('torchvision')
    n = 300
    boxes, scores = _random_boxes(n, seed)
    labels = torch.randint(0, 3, (n,), generator=torch.Generator().manual_seed(seed + 100))
    valid = torch.rand(n, generator=torch.Generator().manual_seed(seed + 200)) > 0.1
    expected = torchvision.ops.batched_nms(boxes[valid], scores[valid], labels[valid], 0.5)
    expected = torch.nonzero(valid)[:, 0][expected]
    order = torch.argsort(scores, descending=True)
    offset = boxes + labels[:, None].float() * (boxes.max() + 1)
    keep, settled = fixed_point_nms(offset[order], valid[order], 0.5, iterations=n)
    assert settled.all()
    assert torch.equal(order[keep], expected)
    # the iteration reaches the fixed point long before n steps; fewer steps than needed
    # leave a settled prefix that is still exactly greedy's
    depth = next(t for t in range(1, n) if fixed_point_nms(offset[order], valid[order], 0.5, t)[1].all())
    assert depth < 32
    few, settled = fixed_point_nms(offset[order], valid[order], 0.5, max(depth - 2, 0))
    kept = order[few]
    assert torch.equal(kept, expected[:len(kept)])


def test_fixed_point_nms_solves_stacked_problems_independently():
    """The RPN's levels, padded to one length and stacked, iterate together: each row's result
    is the one it gets alone, and padding (invalid rows) suppresses nothing."""
    rows, alone = [], []
    for seed, n in ((0, 300), (1, 120), (2, 40)):
        boxes, scores = _random_boxes(n, seed)
        order = torch.argsort(scores, descending=True)
        boxes = boxes[order]
        valid = torch.ones(n, dtype=torch.bool)
        alone.append(fixed_point_nms(boxes, valid, 0.7, 32)[0])
        rows.append((torch.cat([boxes, torch.zeros(300 - n, 4)]), torch.cat([valid, torch.zeros(300 - n, dtype=torch.bool)])))
    keep, settled = fixed_point_nms(torch.stack([b for b, _ in rows]), torch.stack([v for _, v in rows]), 0.7, 32)
    assert settled.all()
    for row, expected in zip(keep, alone):
        assert torch.equal(row[:len(expected)], expected) and not row[len(expected):].any()


@pytest.mark.parametrize('seed', range(4))
def test_greedy_nms_equals_greedy_over_all_candidates(seed):
    """The unrolled greedy NMS RetinaNet exports: thousands of overlapping boxes of a few
    classes (most suppressed, so the 100th kept box lies deep in the score order) give
    torchvision's batched greedy NMS, first 100 boxes, exactly; fewer survivors pad with
    kept = False."""
    torchvision = pytest.importorskip('torchvision')
    n = 3000
    # clusters of near-duplicates around 70 objects, as a detector's anchors give them
    g = torch.Generator().manual_seed(seed)
    xy = torch.rand(70, 2, generator=g) * 300
    objects = torch.cat([xy, xy + 40 + torch.rand(70, 2, generator=g) * 50], 1)
    boxes = objects[torch.randint(0, 70, (n,), generator=g)] + torch.randn(n, 4, generator=g) * 1.5
    scores = torch.rand(n, generator=g)
    labels = torch.randint(0, 2, (n,), generator=torch.Generator().manual_seed(seed + 100))
    valid = torch.rand(n, generator=torch.Generator().manual_seed(seed + 200)) > 0.2
    expected = torchvision.ops.batched_nms(boxes[valid], scores[valid], labels[valid], 0.5)
    expected = torch.nonzero(valid)[:, 0][expected]
    offset = boxes + labels[:, None].float() * (boxes.max() + 1)
    index, kept = greedy_nms(offset, scores, valid, 0.5, 100)
    assert kept.all() and torch.equal(index, expected[:100])
    assert (scores[valid] > scores[expected[99]]).sum() > 200  # the 100th kept is deep in the order
    few = valid & (torch.arange(n) < 40)
    index, kept = greedy_nms(offset, scores, few, 0.5, 100)
    expected = torch.nonzero(few)[:, 0][torchvision.ops.batched_nms(boxes[few], scores[few], labels[few], 0.5)]
    assert kept.sum() == len(expected) < 100 and torch.equal(index[kept], expected) and not kept[len(expected):].any()


def test_onnx_sigmoid_keeps_small_probabilities_apart(tmp_path):
    """The ONNX writer emits sigmoid as PyTorch's formula: onnxruntime's own ``Sigmoid``
    kernel rounds probabilities near 1e-6 (an untrained or weak RPN's objectness) to an
    absolute grid, so distinct scores tie and NMS keeps other proposals than mmdet. Here
    every distinct PyTorch score stays distinct, in PyTorch's order, within a few ulp."""
    pytest.importorskip('onnxruntime')
    from backbones.export.formats import onnx_runner, write_onnx

    class Sigmoid(torch.nn.Module):
        def forward(self, x):
            return x.sigmoid()

    logits = torch.cat([torch.linspace(-16.0, -8.0, 4001), torch.linspace(-4.0, 4.0, 4001)])
    path = str(tmp_path / 'sigmoid.onnx')
    write_onnx(Sigmoid(), logits, path)
    out = onnx_runner(path)(logits)[0]
    expected = logits.sigmoid()
    assert out.unique().numel() == expected.unique().numel() == logits.numel()
    assert torch.equal(torch.argsort(out, stable=True), torch.argsort(expected, stable=True))
    assert ((out - expected).abs() / expected).max() < 1e-6


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
@pytest.mark.parametrize('fmt', ['onnx', 'executorch'])
@pytest.mark.parametrize('config', ['retinanet_edgevit-xxs_fpn_8xb2-1x_coco.py',
                                    'retinanet_efficientformerv2-s0_fpn_8xb2-1x_coco.py'])
def test_retinanet_end_to_end_export_equals_mmdet_predict(config, fmt, tmp_path):
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
    The ONNX export, run through tools/run_exported.py on each validation image as an app reads
    it, gives mmdet's detections of the same pixels, and the job reports the same metrics."""
    import numpy as np
    from PIL import Image
    from backbones.demo.exported import load_runner
    from backbones.demo.job import run_demo
    from backbones.export.targets import build_target
    results = run_demo(work_dir=str(tmp_path), det_config=str(DET / 'retinanet_edgevit-xxs_fpn_8xb2-1x_coco.py'),
                       seg_config=None, num_train=16, num_val=3, size=96, det_iters=20, batch_size=4, num_vis=0,
                       export_formats=('onnx',))
    det = results['detection']
    size = (96, 96)
    model = build_target(det['config'], size, det['checkpoint']).full_model.eval()
    runner = load_runner()
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
