"""backbones/export/runner.py, the runner an app developer ports, and its command line
tools/run_exported.py: it needs neither torch (ONNX) nor mmdet / mmcv / the package; its predictions equal the eager end-to-end module's, mapped back
to images of any size; the command line prints JSON, writes PNGs and refuses bad input with
exit status 2."""
import ast
import importlib.util
import json
import os
import subprocess
import sys

import numpy as np
import pytest
import torch
from PIL import Image

from .conftest import ROOT

pytest.importorskip('onnxruntime')
onnx = pytest.importorskip('onnx')

SIZE = (128, 160)
RUNNER = ROOT / 'backbones' / 'export' / 'runner.py'
TOOL = ROOT / 'tools' / 'run_exported.py'
DET_CONFIG = ROOT / 'configs' / 'detection' / 'retinanet_edgevit-xxs_fpn_8xb2-1x_coco.py'
SEG_CONFIG = ROOT / 'configs' / 'segmentation' / 'fpn_edgevit-xxs_8xb4-40k_ade20k-512x512.py'


def _load_runner():
    """By path, as an app that copied the file imports it."""
    spec = importlib.util.spec_from_file_location('run_exported', RUNNER)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


runner = _load_runner()


def _rgb(h, w, seed=0):
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)


def _smooth(h, w, seed=0):
    """A smooth image (what a bilinear resize changes little)."""
    rng = np.random.default_rng(seed)
    small = rng.integers(0, 256, (max(h // 16, 2), max(w // 16, 2), 3), dtype=np.uint8)
    return np.asarray(Image.fromarray(small).resize((w, h), Image.BILINEAR))


def _run_cli(*args, cwd=None):
    return subprocess.run([sys.executable, str(TOOL), *map(str, args)], capture_output=True, text=True,
                          cwd=cwd or ROOT, timeout=300)


# ---------------------------------------------------------------------------- synthetic models
def _synthetic_onnx(path, task, meta=True, with_masks=True, overrides=None):
    """A tiny ONNX with the contract's input and outputs. Segmentation: seg_map = the image's
    red channel (so the test sees exactly what the runner fed). Detection: fixed rows."""
    from onnx import TensorProto, helper, numpy_helper
    h, w = SIZE
    nodes, outputs = [], []

    def const(name, array):
        nodes.append(helper.make_node('Constant', [], [name], value=numpy_helper.from_array(array, name + '_value')))

    if task == 'segmentation':
        const('starts', np.array([0], np.int64))
        const('ends', np.array([1], np.int64))
        const('axes', np.array([3], np.int64))
        nodes.append(helper.make_node('Slice', ['image', 'starts', 'ends', 'axes'], ['red']))
        nodes.append(helper.make_node('Squeeze', ['red', 'axes'], ['seg_map']))
        outputs.append(helper.make_tensor_value_info('seg_map', TensorProto.UINT8, [1, h, w]))
        names, classes = ['seg_map'], [f'class{i}' for i in range(256)]
    else:
        boxes, scores, labels, masks = _synthetic_detections()
        const('boxes', boxes)
        const('scores', scores)
        const('labels', labels)
        outputs += [helper.make_tensor_value_info('boxes', TensorProto.FLOAT, [len(boxes), 4]),
                    helper.make_tensor_value_info('scores', TensorProto.FLOAT, [len(boxes)]),
                    helper.make_tensor_value_info('labels', TensorProto.INT64, [len(boxes)])]
        names, classes = ['boxes', 'scores', 'labels'], ['cat', 'dog', 'bird']
        if with_masks:
            const('masks', masks)
            outputs.append(helper.make_tensor_value_info('masks', TensorProto.UINT8, [len(boxes), h, w]))
            names.append('masks')
    graph = helper.make_graph(nodes, 'synthetic', [helper.make_tensor_value_info('image', TensorProto.UINT8,
                                                                                  [1, h, w, 3])], outputs)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid('', 18)])
    model.ir_version = 9
    if meta:
        values = dict(task=task, classes=classes, input_name='image', input_size=list(SIZE), input_layout='NHWC',
                      input_dtype='uint8', color_order='RGB', mean=[123.675, 116.28, 103.53],
                      std=[58.395, 57.12, 57.375], score_threshold=0.3 if task == 'detection' else None,
                      outputs=names, config='synthetic', checkpoint=None, weights='random',
                      edgeformers_version='test')
        values.update(overrides or {})
        for key, value in values.items():
            entry = model.metadata_props.add()
            entry.key, entry.value = key, json.dumps(value)
    onnx.save(model, str(path))
    return str(path)


def _synthetic_detections():
    """Rows: two kept, one under the 0.3 threshold, one running past the right edge, padding."""
    h, w = SIZE
    boxes = np.array([[10, 20, 50, 60], [0, 0, 159.5, 127.5], [30, 30, 40, 40], [100, 64, 170, 140],
                      [0, 0, 0, 0], [0, 0, 0, 0]], np.float32)
    scores = np.array([0.9, 0.6, 0.2, 0.5, 0, 0], np.float32)
    labels = np.array([1, 0, 2, 2, -1, -1], np.int64)
    masks = np.zeros((len(boxes), h, w), np.uint8)
    for i, (x1, y1, x2, y2) in enumerate(boxes[:4].astype(int)):
        masks[i, y1:y2, x1:x2] = 1
    return boxes, scores, labels, masks


@pytest.fixture(scope='module')
def synthetic(tmp_path_factory):
    folder = tmp_path_factory.mktemp('synthetic')
    return dict(det=_synthetic_onnx(folder / 'det.onnx', 'detection'),
                seg=_synthetic_onnx(folder / 'seg.onnx', 'segmentation'),
                raw=_synthetic_onnx(folder / 'raw.onnx', 'segmentation', meta=False), folder=folder)


# ---------------------------------------------------------------------------- module
def test_runner_imports_only_stdlib_numpy_pillow_at_module_level():
    tree = ast.parse(RUNNER.read_text())
    top = set()
    for node in tree.body:
        if isinstance(node, ast.Import):
            top |= {a.name.split('.')[0] for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0:
            top.add(node.module.split('.')[0])
    third_party = {m for m in top - {'__future__'} if m not in sys.stdlib_module_names}
    assert third_party == {'numpy', 'PIL'}


def test_letterbox():
    pad = np.array([124, 116, 104], np.uint8)
    image = _rgb(*SIZE)
    canvas, scale = runner.letterbox(image, SIZE, pad)
    assert scale == 1.0 and np.array_equal(canvas, image)  # at the export size: untouched
    # smaller, scale 1 (the width is the limit): no resize, padded at the bottom with the mean
    canvas, scale = runner.letterbox(_rgb(100, 160), SIZE, pad)
    assert scale == 1.0 and np.array_equal(canvas[:100], _rgb(100, 160)) and (canvas[100:] == pad).all()
    # 200 x 200: scale 0.64 -> 128 x 128 at the left, 32 columns of padding
    image = _smooth(200, 200)
    canvas, scale = runner.letterbox(image, SIZE, pad)
    assert scale == pytest.approx(0.64) and canvas.shape == (*SIZE, 3) and canvas.dtype == np.uint8
    assert (canvas[:, 128:] == pad).all()
    assert np.array_equal(canvas[:, :128], np.asarray(Image.fromarray(image).resize((128, 128), Image.BILINEAR)))
    # 64 x 80 up by 2, 256 x 320 down by 2, both fill the canvas
    for h, w, s in ((64, 80, 2.0), (256, 320, 0.5)):
        canvas, scale = runner.letterbox(_smooth(h, w), SIZE, pad)
        assert scale == s and canvas.shape == (*SIZE, 3)
    assert runner.fitted_size(100, 90, SIZE) == (128, 115, 1.28)
    assert runner.pad_colour({'mean': [123.675, 116.28, 103.53]}).tolist() == [124, 116, 104]


def test_synthetic_segmentation_sees_the_letterboxed_image(synthetic):
    """The seg_map of the synthetic model is the red channel of what the runner fed."""
    model = runner.load_model(synthetic['seg'])
    assert model.task == 'segmentation' and model.input_size == SIZE and model.output_names == ['seg_map']
    image = _rgb(*SIZE, seed=3)
    assert np.array_equal(runner.predict(model, image)['seg_map'], image[..., 0])  # bit-identical at scale 1
    # 64 x 80 up by 2, nearest back down: the centre of output pixel i is input pixel 2i + 1
    small = _smooth(64, 80, seed=4)
    canvas, _ = runner.letterbox(small, SIZE, runner.pad_colour(model.meta))
    seg = runner.predict(model, small)['seg_map']
    assert seg.shape == (64, 80) and seg.dtype == np.uint8 and np.array_equal(seg, canvas[1::2, 1::2, 0])
    # 256 x 320 down by 2: each input pixel i reads output pixel i // 2
    big = _smooth(256, 320, seed=5)
    canvas, _ = runner.letterbox(big, SIZE, runner.pad_colour(model.meta))
    seg = runner.predict(model, big)['seg_map']
    assert np.array_equal(seg, canvas[:, :, 0].repeat(2, 0).repeat(2, 1))
    # padded (100 x 90 -> 128 x 115, 45 columns of padding): the padding is cropped away
    odd = _rgb(100, 90, seed=6)
    canvas, _ = runner.letterbox(odd, SIZE, runner.pad_colour(model.meta))
    seg = runner.predict(model, odd)['seg_map']
    assert seg.shape == (100, 90) and np.array_equal(seg, runner.resize_nearest(canvas[:, :115, 0], 100, 90))
    assert not (seg == 124).all()


def test_synthetic_detection_maps_back(synthetic):
    model = runner.load_model(synthetic['det'], threads=1)
    assert model.output_names == ['boxes', 'scores', 'labels', 'masks']
    boxes, scores, labels, masks = _synthetic_detections()
    # at the export size: rows with label >= 0 and score >= 0.3, boxes clipped to the image
    result = runner.predict(model, _rgb(*SIZE))
    assert result['labels'].tolist() == [1, 0, 2] and result['classes'] == ['dog', 'cat', 'bird']
    assert result['scores'].dtype == np.float32 and result['labels'].dtype == np.int64
    assert np.array_equal(result['boxes'], np.array([[10, 20, 50, 60], [0, 0, 159.5, 127.5],
                                                     [100, 64, 160, 128]], np.float32))
    assert result['masks'].shape == (3, *SIZE) and np.array_equal(result['masks'], masks[[0, 1, 3]])
    # --score-thr: a lower threshold keeps the fourth row; padding rows never come back
    assert runner.predict(model, _rgb(*SIZE), score_thr=0.0)['labels'].tolist() == [1, 0, 2, 2]
    # 64 x 80 (scale 2): boxes halved, masks at the original size
    result = runner.predict(model, _rgb(64, 80))
    assert np.allclose(result['boxes'], [[5, 10, 25, 30], [0, 0, 79.75, 63.75], [50, 32, 80, 64]])
    assert result['masks'].shape == (3, 64, 80) and np.array_equal(result['masks'][0], masks[0][1::2, 1::2])
    # 100 x 90 (scale 1.28, 115 columns of content): per-axis factors, clipped to 90 x 100
    result = runner.predict(model, _rgb(100, 90))
    expected = boxes[[0, 1, 3]] / np.array([115 / 90, 128 / 100] * 2, np.float32)
    expected[:, 0::2] = expected[:, 0::2].clip(0, 90)
    expected[:, 1::2] = expected[:, 1::2].clip(0, 100)
    assert np.allclose(result['boxes'], expected)
    assert result['masks'].shape == (3, 100, 90) and result['masks'][2, -1, -1] == 1  # the box past the edge
    image = runner.draw(_rgb(100, 90), result, model.meta)
    assert image.size == (90, 100) and image.mode == 'RGB'
    summary = runner.summary(result, model.meta)
    assert [d['class'] for d in summary['detections']] == ['dog', 'cat', 'bird']


def _membership_script(tmp_path):
    script = tmp_path / 'membership.py'
    script.write_text(
        'import importlib.util, json, sys\n'
        'import numpy as np\n'
        'spec = importlib.util.spec_from_file_location("run_exported", sys.argv[1])\n'
        'runner = importlib.util.module_from_spec(spec); spec.loader.exec_module(runner)\n'
        'model = runner.load_model(sys.argv[2], threads=1)\n'
        'image = np.random.default_rng(0).integers(0, 256, (90, 120, 3), dtype=np.uint8)\n'
        'result = runner.predict(model, image)\n'
        'runner.draw(image, result, model.meta)\n'
        'print(json.dumps({name: name in sys.modules for name in ("torch", "mmdet", "mmcv", "mmseg", "mmengine",\n'
        '                                                        "backbones", "cv2")}))\n')
    return script


def _modules_loaded(tmp_path, model_path):
    # run from an empty folder: nothing of the checkout is importable by accident
    out = subprocess.run([sys.executable, str(_membership_script(tmp_path)), str(RUNNER), str(model_path)],
                         capture_output=True, text=True, cwd=tmp_path, timeout=300)
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_onnx_runs_without_torch_or_mmdet(synthetic, tmp_path):
    for name in ('det', 'seg'):
        loaded = _modules_loaded(tmp_path, synthetic[name])
        assert not any(loaded.values()), loaded


def test_the_tool_runs_onnx_without_torch_or_the_package(synthetic, tmp_path):
    image = tmp_path / 'in.png'
    Image.fromarray(_rgb(40, 50)).save(image)
    script = tmp_path / 'tool_membership.py'
    script.write_text(
        'import json, runpy, sys\n'
        'sys.argv = sys.argv[1:]\n'
        'try:\n'
        '    runpy.run_path(sys.argv[0], run_name="__main__")\n'
        'except SystemExit as done:\n'
        '    assert not done.code, done.code\n'
        'print(json.dumps({name: name in sys.modules for name in ("torch", "mmdet", "mmcv", "backbones")}))\n')
    out = subprocess.run([sys.executable, str(script), str(TOOL), str(synthetic['seg']), str(image)],
                         capture_output=True, text=True, cwd=tmp_path, timeout=300)
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout.strip().splitlines()[-1]) == dict(torch=False, mmdet=False, mmcv=False,
                                                                    backbones=False)


def test_cli_errors(synthetic, tmp_path):
    image = tmp_path / 'ok.png'
    Image.fromarray(_rgb(50, 60)).save(image)
    cases = [
        ((tmp_path / 'absent.onnx', image), 'absent.onnx: no such file'),
        ((image, image), 'unknown kind of model'),
        ((synthetic['raw'], image), 'no end-to-end metadata'),
    ]
    pte = tmp_path / 'raw_128x160.pte'
    pte.write_bytes(b'not really a program')
    cases.append(((pte, image), 'raw_128x160.json not found'))
    for args, message in cases:
        out = _run_cli(*args)
        assert out.returncode == 2 and message in out.stderr and out.stdout == '', (args, out.stderr)
    assert 'without --raw' in _run_cli(synthetic['raw'], image).stderr
    # an unwritable --out (a file where the folder should be): refused before running
    out = _run_cli(synthetic['seg'], image, '--out', image)
    assert out.returncode == 2 and '--out' in out.stderr and out.stdout == ''
    # an image Pillow cannot read and a missing one: named, the good one still processed
    bad = tmp_path / 'bad.jpg'
    bad.write_text('not an image')
    out = _run_cli(synthetic['seg'], bad, tmp_path / 'gone.png', image)
    assert out.returncode == 2
    assert 'bad.jpg: Pillow cannot read it' in out.stderr and 'gone.png: no such image file' in out.stderr
    records = [json.loads(line) for line in out.stdout.splitlines()]
    assert [r['path'] for r in records] == [str(image)] and records[0]['size'] == [50, 60]
    # argument errors are argparse's (status 2)
    assert _run_cli(synthetic['seg'], image, '--threads', '0').returncode == 2
    assert _run_cli(synthetic['seg'], image, '--score-thr', '2').returncode == 2


def test_cli_json_and_pngs(synthetic, tmp_path):
    images = []
    for i, (h, w) in enumerate([(128, 160), (64, 80), (101, 333)]):
        images.append(tmp_path / f'img{i}.jpg')
        Image.fromarray(_smooth(h, w, seed=i)).save(images[-1])
    # a palette PNG and a grayscale one are converted to RGB
    Image.fromarray(_smooth(40, 50)).convert('P').save(tmp_path / 'palette.png')
    Image.fromarray(_smooth(40, 50)).convert('L').save(tmp_path / 'gray.png')
    images += [tmp_path / 'palette.png', tmp_path / 'gray.png']
    out_dir = tmp_path / 'out'
    for model, key in ((synthetic['det'], 'detections'), (synthetic['seg'], 'segmentation')):
        out = _run_cli(model, *images, '--out', out_dir, '--threads', '1')
        assert out.returncode == 0, out.stderr
        records = [json.loads(line) for line in out.stdout.splitlines()]
        assert [r['path'] for r in records] == [str(p) for p in images]
        for record in records:
            assert key in record
            with Image.open(record['png']) as png:
                assert png.format == 'PNG' and png.size == (record['size'][1], record['size'][0])
        if key == 'detections':
            assert [d['class'] for d in records[0]['detections']] == ['dog', 'cat', 'bird']
            assert records[0]['detections'][0] == {'box': [10.0, 20.0, 50.0, 60.0], 'score': 0.9, 'label': 1,
                                                   'class': 'dog'}
            assert len(_run_cli(model, images[0], '--score-thr', '0.55').stdout.split('"class"')) == 3
        else:
            assert sum(records[0]['segmentation'].values()) == pytest.approx(1, abs=1e-3)
    assert sorted(os.listdir(out_dir)) == sorted(f'{p.stem}_pred.png' for p in images)  # no temporary files left


# ---------------------------------------------------------------------------- real exports
def _segmentor():
    from backbones.export.contract import end_to_end
    from backbones.export.prepare import prepare_for_export
    from backbones.export.targets import SegmentorLogits, Target
    from backbones.runtime.models import build_model_from_config
    torch.manual_seed(0)  # module-scoped fixtures are built before the per-test seed
    model, _ = build_model_from_config(str(SEG_CONFIG))
    model.eval()
    return end_to_end(Target('fpn', SegmentorLogits(prepare_for_export(model, SIZE)).eval(), SIZE, model,
                             'segmentor'), config=str(SEG_CONFIG))


def _retinanet():
    from backbones.export.contract import end_to_end
    from backbones.export.prepare import prepare_for_export
    from backbones.export.targets import DenseDetector, Target
    from backbones.runtime.models import build_model_from_config
    torch.manual_seed(0)  # module-scoped fixtures are built before the per-test seed
    model, _ = build_model_from_config(str(DET_CONFIG))
    with torch.no_grad():
        # as tests/test_contract.py: scores spread so that many detections pass 0.05
        model.bbox_head.retina_cls.weight.mul_(0.05)
        model.bbox_head.retina_cls.bias.fill_(-2.8)
    model.eval()
    return end_to_end(Target('retinanet', DenseDetector(prepare_for_export(model, SIZE)).eval(), SIZE, model,
                             'retinanet'), config=str(DET_CONFIG))


def _export(target, fmt, folder):
    from backbones.export.contract import export_end_to_end
    return export_end_to_end(target, fmt, str(folder), example=torch.from_numpy(_smooth(*SIZE)[None].copy())).path


@pytest.fixture(scope='module')
def segmentor(tmp_path_factory):
    target = _segmentor()
    return target, _export(target, 'onnx', tmp_path_factory.mktemp('seg'))


@pytest.fixture(scope='module')
def retinanet(tmp_path_factory):
    target = _retinanet()
    return target, _export(target, 'onnx', tmp_path_factory.mktemp('det'))


def _eager(target, canvas):
    with torch.no_grad():
        return [o.numpy() for o in (lambda out: out if isinstance(out, tuple) else (out,))(
            target.module(torch.from_numpy(canvas[None])))]


def _seg_checks(target, model):
    """seg_map at the export size identical to eager; other sizes mapped back."""
    image = _smooth(*SIZE, seed=1)
    (expected,) = _eager(target, image)
    seg = runner.predict(model, image)['seg_map']
    assert seg.dtype == np.uint8 and np.array_equal(seg, expected[0])
    pad = runner.pad_colour(model.meta)
    for (h, w), content in (((64, 80), SIZE), ((256, 320), SIZE), ((100, 90), (128, 115))):
        image = _smooth(h, w, seed=h)
        canvas, _ = runner.letterbox(image, SIZE, pad)
        (eager,) = _eager(target, canvas)
        seg = runner.predict(model, image)['seg_map']
        assert seg.shape == (h, w)
        assert np.array_equal(seg, runner.resize_nearest(eager[0, :content[0], :content[1]], h, w))
        if (h, w) == (64, 80):
            assert np.array_equal(seg, eager[0, 1::2, 1::2])
    return len(np.unique(expected))


def test_segmentor_onnx_equals_eager(segmentor):
    target, path = segmentor
    model = runner.load_model(path, threads=1)  # no spinning onnxruntime workers beside eager torch
    assert model.meta['classes'][0] == 'wall' and model.meta['config'] == str(SEG_CONFIG)
    classes = _seg_checks(target, model)
    assert classes > 1  # not a constant map


def test_segmentor_cli_without_torch(segmentor, tmp_path):
    _, path = segmentor
    loaded = _modules_loaded(tmp_path, path)
    assert not any(loaded.values()), loaded
    image = tmp_path / 'photo.png'
    Image.fromarray(_smooth(90, 200)).save(image)
    out = _run_cli(path, image, '--out', tmp_path / 'preds')
    assert out.returncode == 0, out.stderr
    (record,) = [json.loads(line) for line in out.stdout.splitlines()]
    assert record['size'] == [90, 200] and record['png'].endswith('photo_pred.png')
    assert set(record['segmentation']) <= {c.strip() for c in runner.read_metadata(path)['classes']}


def _match(result, boxes, scores, labels, box_tol):
    """Same detections one to one: equal labels, box coordinates within ``box_tol`` pixels,
    scores within 1e-3 (near-tied scores may swap places between runtimes)."""
    n = len(labels)
    assert len(result['labels']) == n > 0
    taken = np.zeros(n, bool)
    worst = 0.0
    for box, score, label in zip(result['boxes'], result['scores'], result['labels']):
        diff = np.abs(boxes - box).max(1)
        ok = (labels == label) & (diff <= box_tol) & (np.abs(scores - score) <= 1e-3) & ~taken
        assert ok.any(), (box, score, label)
        j = np.flatnonzero(ok)[np.argmin(diff[ok])]
        taken[j] = True
        worst = max(worst, float(diff[j]))
    return n, worst


@pytest.mark.slow
def test_retinanet_onnx_equals_eager(retinanet, tmp_path):
    target, path = retinanet
    model = runner.load_model(path, threads=1)
    thr = model.meta['score_threshold']
    assert model.task == 'detection' and thr == 0.05 and len(model.meta['classes']) == 80
    report = []
    for h, w in ((128, 160), (256, 320), (64, 80), (100, 90)):
        image = _smooth(h, w, seed=w)
        canvas, scale = runner.letterbox(image, SIZE, runner.pad_colour(model.meta))
        boxes, scores, labels = _eager(target, canvas)
        keep = (labels >= 0) & (scores >= thr)
        new_h, new_w, _ = runner.fitted_size(h, w, SIZE)
        expected = boxes[keep] / np.array([new_w / w, new_h / h] * 2, np.float32)
        if (new_h, new_w) == (round(h * scale), round(w * scale)) and scale in (0.5, 1.0, 2.0):
            assert np.allclose(expected, boxes[keep] / scale)  # the plain scale where it is exact
        expected[:, 0::2] = expected[:, 0::2].clip(0, w)
        expected[:, 1::2] = expected[:, 1::2].clip(0, h)
        result = runner.predict(model, image)
        assert set(result) == {'boxes', 'scores', 'labels', 'classes'}
        assert (result['boxes'][:, 2] <= w).all() and (result['boxes'][:, 3] <= h).all()
        count, worst = _match(result, expected, scores[keep], labels[keep], box_tol=0.01 / min(scale, 1))
        report.append(f'{h}x{w}: {count} detections, worst box diff {worst:.1e} px')
    print('; '.join(report))
    # the command line draws and reports them
    image = tmp_path / 'street.jpg'
    Image.fromarray(_smooth(200, 300)).save(image)
    out = _run_cli(path, image, '--out', tmp_path, '--score-thr', '0.06')
    assert out.returncode == 0, out.stderr
    (record,) = [json.loads(line) for line in out.stdout.splitlines()]
    assert record['detections'] and all(d['score'] >= 0.06 for d in record['detections'])
    assert os.path.isfile(record['png'])


@pytest.mark.slow
def test_segmentor_executorch(tmp_path):
    pytest.importorskip('executorch')
    target = _segmentor()
    path = _export(target, 'executorch', tmp_path)
    model = runner.load_model(path, threads=2)
    assert model.meta == runner.read_metadata(path) and model.task == 'segmentation'
    _seg_checks(target, model)
    # the .pte binding of the pip wheel is torch-based; nothing else comes in
    loaded = _modules_loaded(tmp_path, path)
    assert loaded['torch'] and not any(v for k, v in loaded.items() if k != 'torch'), loaded
    out = _run_cli(path, tmp_path / 'absent.png')
    assert out.returncode == 2 and 'absent.png: no such image file' in out.stderr


# ---------------------------------------------------------------------------- input it cannot read faithfully
def test_16_bit_images_are_scaled_and_float_images_refused(tmp_path):
    values = np.linspace(0, 65535, 40 * 50).reshape(40, 50).astype(np.uint16)
    Image.fromarray(values).save(tmp_path / 'deep.png')
    image = runner.load_image(str(tmp_path / 'deep.png'))
    assert image.dtype == np.uint8 and image.shape == (40, 50, 3)
    np.testing.assert_array_equal(image[..., 0], ((values.astype(np.int64) + 128) // 257).astype(np.uint8))
    assert image.min() == 0 and image.max() == 255 and len(np.unique(image)) > 200  # not saturated to white
    Image.fromarray(np.random.default_rng(0).random((20, 30)).astype(np.float32)).save(tmp_path / 'float.tif')
    with pytest.raises(runner.RunnerError, match='floating-point image'):
        runner.load_image(str(tmp_path / 'float.tif'))
    rgba = np.dstack([_rgb(20, 30), np.full((20, 30), 7, np.uint8)])
    Image.fromarray(rgba, 'RGBA').save(tmp_path / 'alpha.png')
    np.testing.assert_array_equal(runner.load_image(str(tmp_path / 'alpha.png')), rgba[..., :3])  # as OpenCV reads it


@pytest.mark.parametrize('change,message', [
    (dict(input_size=[64, 64]), 'the model takes [1, 128, 160, 3]'),
    (dict(input_size='128x160'), "input_size is '128x160', not [H, W]"),
    (dict(mean=[1.0, 2.0]), 'mean is [1.0, 2.0], not 3 numbers'),
    (dict(std=[58.4, 0, 57.4]), 'every value must be positive'),
    (dict(score_threshold='high'), "score_threshold is 'high', not a number"),
    (dict(classes=['cat', 'dog'], num_classes=3), 'classes lists 2 names but the model has 3 classes'),
    (dict(classes='cat,dog,bird'), 'classes is not a list of class names'),
    (dict(outputs=['boxes', 'scores']), "outputs are ['boxes', 'scores']"),
])
def test_metadata_that_contradicts_the_model_is_refused_on_load(tmp_path, change, message):
    path = _synthetic_onnx(tmp_path / 'det.onnx', 'detection', overrides=change)
    with pytest.raises(runner.RunnerError) as err:
        runner.load_model(path)
    assert message in str(err.value), str(err.value)
    image = tmp_path / 'in.png'
    Image.fromarray(_rgb(40, 50)).save(image)
    out = _run_cli(path, image)
    assert out.returncode == 2 and message in out.stderr and 'Traceback' not in out.stderr and out.stdout == ''


def test_labels_beyond_the_classes_are_refused(tmp_path):
    """An edited class list (one name where the model has three labels): never shown as
    guessed names."""
    model = runner.load_model(_synthetic_onnx(tmp_path / 'det.onnx', 'detection', overrides=dict(classes=['cat'])))
    with pytest.raises(runner.RunnerError, match='label 1, beyond the 1 classes of its metadata'):
        runner.predict(model, _rgb(*SIZE))
    seg = runner.load_model(_synthetic_onnx(tmp_path / 'seg.onnx', 'segmentation', overrides=dict(classes=['a'])))
    with pytest.raises(runner.RunnerError, match='beyond the 1 classes'):
        runner.predict(seg, _rgb(*SIZE))


def test_an_edited_sidecar_of_a_pte_is_checked_against_the_program(tmp_path):
    pytest.importorskip('executorch')
    from executorch.exir import to_edge

    class Segmentor(torch.nn.Module):
        def forward(self, image):
            return image[..., 0]

    h, w = SIZE
    program = to_edge(torch.export.export(Segmentor(), (torch.zeros(1, h, w, 3, dtype=torch.uint8),))).to_executorch()
    path = tmp_path / 'seg_128x160.pte'
    path.write_bytes(program.buffer)
    meta = dict(task='segmentation', classes=[f'c{i}' for i in range(256)], num_classes=256, input_size=[h, w],
                input_layout='NHWC', input_dtype='uint8', mean=[0, 0, 0], std=[1, 1, 1], outputs=['seg_map'])
    (tmp_path / 'seg_128x160.json').write_text(json.dumps(meta))
    assert runner.load_model(str(path)).input_size == (h, w)
    (tmp_path / 'seg_128x160.json').write_text(json.dumps(dict(meta, input_size=[256, 320])))
    with pytest.raises(runner.RunnerError, match=r'the model takes \[1, 128, 160, 3\]'):
        runner.load_model(str(path))


def test_unexpected_failures_are_one_line_unless_debug(synthetic, tmp_path, monkeypatch):
    image = tmp_path / 'in.png'
    Image.fromarray(_rgb(40, 50)).save(image)

    def broken(*args, **kwargs):
        raise RuntimeError('a bug\nover two lines')

    monkeypatch.setattr(runner, 'predict', broken)
    import contextlib
    import io
    err = io.StringIO()
    with contextlib.redirect_stderr(err):
        assert runner.main([synthetic['seg'], str(image)]) == 1
    assert err.getvalue() == ('error: RuntimeError: a bug over two lines (an unexpected failure; --debug shows the '
                              'traceback)\n')
    with pytest.raises(RuntimeError, match='a bug'):
        runner.main([synthetic['seg'], str(image), '--debug'])

