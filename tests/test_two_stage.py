"""Mask R-CNN end to end (uint8 image in; boxes / scores / labels / masks out, proposals,
RoIAlign, box and mask heads, NMS and mask pasting in the graph) equals mmdet's predict;
the in-graph RoIAlign equals mmcv's ``roi_align``."""
import os

import pytest
import torch

from backbones.export.contract import end_to_end
from backbones.export.prepare import prepare_for_export
from backbones.export.targets import DenseDetector, Target
from backbones.runtime.models import build_model_from_config, image_meta

from .conftest import DEMO_DET_CONFIG
from .test_contract import DET, SIZE, _image, _mmdet_predict, match_detections

CONFIGS = ['mask-rcnn_edgevit-xxs_fpn_8xb2-1x_coco.py', 'mask-rcnn_efficientformerv2-s0_fpn_8xb2-1x_coco.py']


def mask_rcnn(config, seed=0, cfg_options=None):
    """A Mask R-CNN with random weights tuned so that many proposals and detections survive:
    objectness above 0.5 for most anchors, class logits spread well above the background's
    (hundreds of (proposal, class) pairs over ``score_thr``, NMS has plenty to suppress), mask
    logits spread so that masks are neither empty nor full. ``cfg_options`` as
    ``--cfg-options`` gives them."""
    torch.manual_seed(seed)
    model, _ = build_model_from_config(str(DET / config), cfg_options)
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        model.rpn_head.rpn_cls.bias.fill_(1.0)
        fc = model.roi_head.bbox_head.fc_cls
        fc.bias.copy_(torch.randn(fc.bias.shape, generator=g))
        fc.bias[-1] = -3.0
        logits = model.roi_head.mask_head.conv_logits
        logits.weight.mul_(8.0)
        logits.bias.fill_(0.5)
    model.eval()
    target = Target(config[:-3], DenseDetector(prepare_for_export(model, SIZE)).eval(), SIZE, model, 'two-stage')
    return model, end_to_end(target, cfg_options=cfg_options)


def _mask_iou(a, b):
    a, b = torch.as_tensor(a).bool(), torch.as_tensor(b).bool()
    union = (a | b).sum().item()
    return 1.0 if union == 0 else (a & b).sum().item() / union


#: pixels two masks of one detection may differ by whatever their IoU: a pixel whose mask
#: probability sits at the 0.5 threshold flips with the runtime's rounding, and in a mask of
#: a dozen pixels one flip alone brings the IoU under 0.95
MASK_PIXEL_SLACK = 2


def check_instances(outputs, expected):
    """One to one: each detection matches an expected one with the same label, box IoU >= 0.99,
    score within 1e-3, and mask IoU >= 0.95 (or at most ``MASK_PIXEL_SLACK`` pixels apart);
    padding rows empty. Returns (count, min box IoU, max score difference, min mask IoU, mean
    mask IoU)."""
    boxes, scores, labels, masks = [torch.as_tensor(o) for o in outputs]
    k = int((labels >= 0).sum())
    assert k == len(expected) > 0
    assert masks.dtype == torch.uint8 and masks.shape == (len(labels), *expected.masks.shape[1:])
    pairs, box_iou, score_diff = match_detections(boxes[:k], scores[:k], labels[:k], expected)
    mask_ious = [_mask_iou(masks[i], expected.masks[j]) for i, j in pairs]
    apart = [int((masks[i].bool() ^ torch.as_tensor(expected.masks[j]).bool()).sum()) for i, j in pairs]
    far = sorted((iou, n) for iou, n in zip(mask_ious, apart) if iou < 0.95 and n > MASK_PIXEL_SLACK)
    assert not far, f'(mask IoU, pixels apart) of the detections whose masks differ: {far[:5]}'
    assert (scores[k:] == 0).all() and (labels[k:] == -1).all() and (masks[k:] == 0).all()
    assert (boxes[k:] == 0).all()
    return k, box_iou, score_diff, min(mask_ious), sum(mask_ious) / k


def _mask_fill(expected):
    return expected.masks.float().mean((1, 2))


SEED = 1


def _rois(size, n=64, seed=0):
    """Boxes inside the image of every kind the levels see: tiny, square, thin (both ways),
    the whole image, touching the borders."""
    g = torch.Generator().manual_seed(seed)
    h, w = size
    x1 = torch.rand(n, generator=g) * w
    y1 = torch.rand(n, generator=g) * h
    bw = torch.rand(n, generator=g) ** 2 * w
    bh = torch.rand(n, generator=g) ** 2 * h
    boxes = torch.stack([x1, y1, (x1 + bw).clamp(max=w), (y1 + bh).clamp(max=h)], 1)
    fixed = torch.tensor([[0, 0, w, h], [0, 0, 1, 1], [w - 2, h - 2, w, h], [0, 10, w, 13], [10, 0, 12, h],
                          [3.3, 4.7, 9.1, 8.2], [0, 0, 0, 0], [5, 5, 5, 9], [20, 30, 76, 86], [1, 2, 113, 114.5],
                          [0, 0, 400, 500], [7, 9, 230, 250], [w - 300, h - 300, w, h], [0, h - 3, w, h]],
                         dtype=torch.float32)
    return torch.cat([boxes, fixed])


def _roi_layer(extractor, sampling_ratio=0):
    pytest.importorskip('mmcv.ops')
    model, _ = build_model_from_config(str(DET / CONFIGS[0]))
    layer = getattr(model.roi_head, extractor)
    for roi_layer in layer.roi_layers:
        roi_layer.sampling_ratio = sampling_ratio
    return layer


def _level_sizes(layer, size):
    return [(size[0] // s, size[1] // s) for s in layer.featmap_strides]


def _extract(layer, size, rois, seed=3, per_cell=False):
    """On random feature maps: (mmdet's extractor with mmcv's roi_align, ours, our module);
    ``per_cell``: ours in the form the ExecuTorch export uses (one cell of every bin at a time)."""
    from mmdet.structures.bbox import bbox2roi
    from backbones.export.two_stage import MultiLevelRoIAlign
    sizes = _level_sizes(layer, size)
    g = torch.Generator().manual_seed(seed)
    feats = [torch.randn(1, layer.out_channels, h, w, generator=g) for h, w in sizes]
    ours = MultiLevelRoIAlign(layer, size, sizes)
    ours.per_cell = per_cell
    assert torch.equal(ours.levels(rois), layer.map_roi_levels(bbox2roi([rois]), len(sizes)))
    return layer(tuple(feats), bbox2roi([rois])), ours(feats, rois), ours


@pytest.mark.parametrize('per_cell', [False, True], ids=['chunks', 'per-cell'])
@pytest.mark.parametrize('sampling_ratio', [0, 2])
@pytest.mark.parametrize('extractor', ['bbox_roi_extractor', 'mask_roi_extractor'])
def test_roi_align_equals_mmcv(extractor, sampling_ratio, per_cell):
    """The gather-based multi-level RoIAlign equals mmdet's SingleRoIExtractor with mmcv's
    roi_align (adaptive sampling grid, or a fixed one, aligned) on every level, for RoIs of all
    sizes and shapes, in both its forms (cells gathered in chunks for batched matmuls, or one
    at a time with multiply-adds, as exported to ExecuTorch); with the adaptive grid each bin
    gathers fewer cells than its samples' bilinear neighbours."""
    layer = _roi_layer(extractor, sampling_ratio)
    size = (512, 640)  # large enough for RoIs on every level (sqrt(area) >= 448 on the top one)
    rois = _rois(size)
    expected, got, ours = _extract(layer, size, rois, per_cell=per_cell)
    assert set(ours.levels(rois).tolist()) == set(range(len(layer.featmap_strides)))  # every level is exercised
    if sampling_ratio:
        assert (ours.samples, ours.points) == (4, 16)
    else:
        assert 1 < ours.samples and ours.points < 4 * ours.samples
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-5)


class _RoIAlignOnPyramid(torch.nn.Module):
    """One input (the finest level) -> the RoI features of fixed RoIs; the coarser levels are
    the finest sub-sampled (an exportable stand-in for an FPN)."""

    def __init__(self, align, rois, levels):
        super().__init__()
        self.align = align
        self.levels = levels
        self.register_buffer('rois', rois)

    def pyramid(self, x):
        return [x[:, :, ::2 ** i, ::2 ** i] for i in range(self.levels)]

    def forward(self, x):
        return self.align(self.pyramid(x), self.rois)


def test_executorch_export_gathers_per_cell(tmp_path):
    """The ExecuTorch writer lowers the in-graph RoIAlign one cell at a time (no batched
    matmul, one gather per cell a bin reads), with a memory plan of a few cells, leaves the
    module as it was, and the program equals mmcv's roi_align."""
    pytest.importorskip('executorch')
    from mmdet.structures.bbox import bbox2roi
    from backbones.export.formats import executorch_runner, write_executorch
    from backbones.export.two_stage import MultiLevelRoIAlign
    layer = _roi_layer('bbox_roi_extractor')
    size = (128, 160)
    sizes = _level_sizes(layer, size)
    rois = _rois(size, n=24)[:24]  # the random ones: inside the image, as the detector clips them
    align = MultiLevelRoIAlign(layer, size, sizes)
    module = _RoIAlignOnPyramid(align, rois, len(sizes)).eval()
    x = torch.randn(1, layer.out_channels, *sizes[0], generator=torch.Generator().manual_seed(5))
    path = str(tmp_path / 'roi_align.pte')
    written = write_executorch(module, x, path)
    assert align.per_cell is False
    assert written.not_delegated.get('aten.index_select.default') == align.points, written.not_delegated
    assert 'aten.bmm.default' not in written.not_delegated
    # each cell is gathered, weighted and summed before the next is gathered, so the memory
    # plan holds a few gathered cells, not all of them (as one XNNPACK call for all the
    # multiply-adds, or the breadth-first order lowering leaves, would need)
    cell_bytes = rois.shape[0] * 7 * 7 * layer.out_channels * 4
    assert align.points >= 20 and written.planned_bytes < 8 * cell_bytes, (written.planned_bytes, cell_bytes)
    got = executorch_runner(path)(x)[0]
    # mmcv's CPU roi_align reads a strided view as if contiguous
    expected = layer(tuple(level.contiguous() for level in module.pyramid(x)), bbox2roi([rois]))
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-5)


def _whole_cell_rois(layer, image):
    """RoIs whose bins span a whole number of cells (1..5 per axis) on the level mmdet maps
    them to, their corner a few ulps around cell borders and powers of two."""
    from mmdet.structures.bbox import bbox2roi
    boxes, levels = [], []
    for level, stride in enumerate(layer.featmap_strides):
        for a in range(1, 6):
            for b in range(1, 6):
                h, w = 7 * a * stride, 7 * b * stride
                for corner in (4.0, 8.0, 16.0, 32.0, 64.0, 100.0):
                    for eps in (-3e-5, -1e-6, 0.0, 1e-6, 3e-5, 0.25, 0.5):
                        y = (corner + eps + 0.5) * stride   # feature coordinate corner + eps after the half-pixel offset
                        x = y / 2
                        if y + h <= image[0] and x + w <= image[1]:
                            boxes.append([x, y, x + w, y + h])
                            levels.append(level)
    boxes = torch.tensor(boxes, dtype=torch.float32)
    boxes = boxes[layer.map_roi_levels(bbox2roi([boxes]), len(layer.featmap_strides)) == torch.tensor(levels)]
    # found by search: on level 0 (stride 4) rounding puts the last sample of one of these
    # bins exactly on the last row of the bin's window; its second row, past the window, has weight 0
    found = []
    for y0, y1 in ((-3.814697265625e-06, 112.0), (7.999999046325684, 120.0), (15.999994277954102, 156.0)):
        found += [[10.0, y0, 30.0, y1], [y0, 10.0, y1, 30.0]]
    return torch.cat([boxes, torch.tensor(found, dtype=torch.float32)])


@pytest.mark.parametrize('per_cell', [False, True], ids=['chunks', 'per-cell'])
def test_roi_align_on_bins_of_whole_cells(per_cell):
    """Where a bin spans a whole number of cells, its first and last samples lie exactly a
    whole number of cells apart, and rounding can put the last one on the last row of the
    window of cells the bin reads, its second row past it: such RoIs on every level, at offsets of a few ulps around
    cell borders and powers of two, still equal mmcv's roi_align."""
    layer = _roi_layer('bbox_roi_extractor')
    size = (1024, 1024)
    rois = _whole_cell_rois(layer, size)
    expected, got, ours = _extract(layer, size, rois, per_cell=per_cell)
    assert len(rois) > 300 and set(ours.levels(rois).tolist()) == set(range(len(layer.featmap_strides)))
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-5)


def test_sample_grids():
    """The adaptive grid's bound: on levels below the top a RoI has fewer than 28 x 28 cells."""
    from backbones.export.two_stage import sample_grids
    # one level of 32 x 40 cells: at most 5 x 6 samples per bin, but not both (area)
    grids = sample_grids((7, 7), [(32, 40)], [784])
    assert max(a * b for a, b in grids) == 25 and (5, 6) not in grids and {(5, 5), (4, 6), (5, 1)} <= set(grids)
    assert max((a + 1) * (b + 1) for a, b in grids) == 36  # cells one bin reads: against 4 x 25 neighbours
    assert max(a * b for a, b in sample_grids((7, 7), [(32, 40)], [float('inf')])) == 30
    assert sample_grids((14, 14), [(4, 5)], [float('inf')]) == [(1, 1)]


@pytest.mark.slow
@pytest.mark.parametrize('config', CONFIGS)
def test_mask_rcnn_end_to_end_eager_equals_mmdet_predict(config):
    model, target = mask_rcnn(config, SEED)
    image = _image()
    expected = _mmdet_predict(model, image)
    with torch.no_grad():
        outputs = target.module(image)
    assert [tuple(o.shape) for o in outputs] == [(100, 4), (100,), (100,), (100, *SIZE)]
    print(config, 'eager', check_instances(outputs, expected))


def test_cfg_options_set_proposal_and_detection_slots():
    """Fewer proposals and detection slots (a phone's setting, through --cfg-options) give
    mmdet's predict under the same settings, in graphs of those sizes, recorded in the meta."""
    options = {'model.test_cfg.rpn.max_per_img': 150, 'model.test_cfg.rcnn.max_per_img': 12}
    model, target = mask_rcnn(CONFIGS[1], SEED, options)
    assert model.test_cfg.rpn.max_per_img == 150 and model.test_cfg.rcnn.max_per_img == 12
    assert target.meta['proposals'] == 150 and target.meta['max_detections'] == 12
    assert target.meta['cfg_options'] == options
    image = _image()
    expected = _mmdet_predict(model, image)
    with torch.no_grad():
        outputs = target.module(image)
    assert [tuple(o.shape) for o in outputs] == [(12, 4), (12,), (12,), (12, *SIZE)]
    assert len(expected) == 12
    count, box_iou, score_diff, mask_iou, _ = check_instances(outputs, expected)
    assert count == 12 and box_iou > 0.999 and score_diff < 1e-5 and mask_iou > 0.99


def test_misspelt_cfg_options_are_named():
    from backbones.benchmark.end_to_end import options_label
    from backbones.runtime.models import new_config_keys
    config = str(DET / CONFIGS[1])
    new = new_config_keys(config, {'model.test_cfg.rcnn.max_per_img': 20, 'model.test_cfg.rcnn.max_per_imgs': 20,
                                   'model.test_cfg.rpm.max_per_img': 300})
    assert sorted(new) == ['model.test_cfg.rcnn.max_per_imgs', 'model.test_cfg.rpm.max_per_img']
    assert 'max_per_img' in new['model.test_cfg.rcnn.max_per_imgs']  # what rcnn has, to spot the typo
    assert new['model.test_cfg.rpm.max_per_img'].startswith('model.test_cfg has') and 'rpn' in new[
        'model.test_cfg.rpm.max_per_img']
    assert options_label({'model.test_cfg.rpn.max_per_img': 300, 'model.test_cfg.rcnn.max_per_img': 20}) == \
        '@rpn.max_per_img=300,rcnn.max_per_img=20'
    assert options_label(None) == ''


@pytest.fixture
def one_export_at_a_time():
    """A Mask R-CNN ExecuTorch lowering peaks near 13 GB: across pytest-xdist's workers these
    tests take an exclusive lock on a file, so only one runs at a time."""
    import fcntl
    import tempfile
    with open(os.path.join(tempfile.gettempdir(), 'edgeformers-mask-rcnn-export.lock'), 'w') as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


@pytest.mark.slow
@pytest.mark.parametrize('config', CONFIGS[1:])
def test_mask_rcnn_end_to_end_export_equals_mmdet_predict(config, tmp_path, one_export_at_a_time):
    """The export runs the eager graph above (both backbones give mmdet's detections there);
    the post-processing it lowers is the same for every backbone, so one (the main job's,
    EfficientFormerV2-S0) is exported, to ONNX, with its metadata and the runner drawing its
    masks; the trained test below exports it to both runtimes. Each Mask R-CNN export takes
    minutes."""
    fmt = 'onnx'
    pytest.importorskip('onnxruntime')
    from backbones.export.contract import export_end_to_end, read_metadata
    from backbones.export.formats import run_exported
    model, target = mask_rcnn(config, SEED)
    target.meta['config'] = config
    image = _image()
    result = export_end_to_end(target, fmt, str(tmp_path), example=image)
    outputs = run_exported(result.path, image)
    assert [tuple(o.shape) for o in outputs] == [(100, 4), (100,), (100,), (100, *SIZE)]
    assert [o.dtype for o in outputs] == [torch.float32, torch.float32, torch.int64, torch.uint8]
    count, box_iou, score_diff, mask_iou, mean_mask_iou = check_instances(outputs, _mmdet_predict(model, image))
    print(f'{config} {fmt}: {count} detections, min box IoU {box_iou:.5f}, max score diff {score_diff:.1e}, '
          f'min mask IoU {mask_iou:.4f} (mean {mean_mask_iou:.5f}); ' + result.describe())
    meta = read_metadata(result.path)
    assert meta['task'] == 'detection' and meta['outputs'] == ['boxes', 'scores', 'labels', 'masks']
    assert meta['proposals'] == 1000 and meta['mask_threshold'] == 0.5 and meta['score_threshold'] == 0.05
    import onnx
    assert [o.name for o in onnx.load(result.path).graph.output] == ['boxes', 'scores', 'labels', 'masks']
    _runner_draws_masks(result.path, tmp_path)


def _runner_draws_masks(path, tmp_path):
    """the runner (backbones/export/runner.py) on the real export: an image twice the export size (letterboxed)
    gets masks at its own size, drawn onto the picture."""
    import numpy as np
    from backbones.export import runner
    model = runner.load_model(path)
    image = np.random.default_rng(0).integers(0, 256, (2 * SIZE[0], 2 * SIZE[1], 3), dtype=np.uint8)
    result = runner.predict(model, image)
    assert len(result['labels']) > 0
    assert result['masks'].shape == (len(result['labels']), *image.shape[:2]) and result['masks'].dtype == np.uint8
    assert result['masks'].any()
    canvas = runner.draw(image, result, model.meta)
    assert np.asarray(canvas).shape[:2] == image.shape[:2]
    assert (np.asarray(canvas)[..., :3] != image).any()


# ---------------------------------------------------------------------------- trained
TRAINED_SIZE = (96, 96)


@pytest.fixture(scope='module')
def trained_mask_rcnn(tmp_path_factory):
    """The main job's detector (its default config, Mask R-CNN EfficientFormerV2-S0) trained
    by the job on its built-in data at 96 px: objectness and class scores as training spreads
    them. Returns the end-to-end target of its checkpoint and the validation images (uint8
    ``[1, H, W, 3]`` RGB, as an app reads them)."""
    import numpy as np
    from PIL import Image
    from backbones.demo.job import run_demo
    from backbones.export.targets import build_target
    work = tmp_path_factory.mktemp('trained_mask_rcnn')
    results = run_demo(work_dir=str(work), det_config=DEMO_DET_CONFIG, seg_config=None, num_train=32, num_val=4, size=TRAINED_SIZE[0],
                       det_iters=40, batch_size=4, num_vis=0, export_formats=())
    det = results['detection']
    assert det['metrics']['coco/bbox_mAP'] > 0.05 and det['metrics']['coco/segm_mAP'] > 0.05  # it has learnt
    target = end_to_end(build_target(det['config'], TRAINED_SIZE, det['checkpoint']))
    paths = sorted((work / 'data' / 'coco' / 'val2017').glob('*.jpg'))
    images = [torch.from_numpy(np.asarray(Image.open(p).convert('RGB')).copy())[None] for p in paths]
    assert len(images) == 4 and images[0].shape == (1, *TRAINED_SIZE, 3)
    return target, images


class _WithNetworkOutputs(torch.nn.Module):
    """The end-to-end graph, also returning the network outputs its post-processing reads
    (FPN features, RPN scores, RPN deltas)."""

    def __init__(self, e2e) -> None:
        super().__init__()
        self.e2e = e2e

    def forward(self, image):
        feats, scores, deltas = self.e2e.network_outputs(image)
        return (*self.e2e.post(feats, scores, deltas), *feats, *scores, *deltas)


@pytest.mark.slow
def test_trained_mask_rcnn_export_equals_mmdet_predict(trained_mask_rcnn, tmp_path, one_export_at_a_time):
    """The trained detector's ONNX and ExecuTorch exports against two references, on every
    validation image: mmdet's predict on the same pixels (what an app gets is what mmdet gives),
    and mmdet's RPN and RoI head (``predict_by_feat``, ``roi_head.predict``) on the network
    outputs the export itself computed: the in-graph proposals, RoIAlign, heads, NMS and pasting
    alone, whatever the runtime's rounding in the network does to near-tied proposals. One test
    for both runtimes: the trained detector is made once per process."""
    from mmdet.structures import DetDataSample
    from backbones.export.convert import export
    from backbones.export.formats import run_exported
    formats = [f for f, module in (('onnx', 'onnxruntime'), ('executorch', 'executorch')) if _importable(module)]
    if not formats:
        pytest.skip('neither onnxruntime nor executorch is installed (the export extra)')
    target, images = trained_mask_rcnn
    model = target.full_model.eval()
    probe = Target('trained', _WithNetworkOutputs(target.module).eval(), TRAINED_SIZE, model, 'two-stage')
    meta = image_meta(TRAINED_SIZE)
    with torch.no_grad():
        expected = [_mmdet_predict(model, image, TRAINED_SIZE) for image in images]
    assert all(len(on_pixels) > 20 for on_pixels in expected)  # many detections per image
    for fmt in formats:
        result = export(probe, fmt, str(tmp_path / fmt), example=images[0])
        if fmt == 'executorch':
            # the network is delegated; the proposals, RoIAlign, NMS and pasting run on portable kernels
            assert 'aten.convolution.default' not in result.not_delegated
        for i, (image, on_pixels) in enumerate(zip(images, expected)):
            outputs = [torch.as_tensor(o) for o in run_exported(result.path, image)]
            detections, network = outputs[:4], outputs[4:]
            n = len(network) // 3
            with torch.no_grad():
                proposals = model.rpn_head.predict_by_feat(network[n:2 * n], network[2 * n:], batch_img_metas=[meta],
                                                           cfg=model.test_cfg.rpn, rescale=False)
                on_features = model.roi_head.predict(tuple(network[:n]), proposals, [DetDataSample(metainfo=meta)],
                                                     rescale=True)[0]
            print(f'{fmt} image {i}: on its own network outputs {check_instances(detections, on_features)}; '
                  f'on the pixels {check_instances(detections, on_pixels)}')


def _importable(module: str) -> bool:
    import importlib.util
    return importlib.util.find_spec(module) is not None
