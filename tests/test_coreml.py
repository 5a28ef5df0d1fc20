"""Core ML export as an app uses it: an RGB image input, named outputs (int32 labels /
seg_map), class names and the rest of the metadata in the package, fp16 network with fp32
post-processing, no 16-bit or 64-bit integers in the program.

Running a Core ML model needs macOS, so nothing here predicts with the package. What is
checked instead: the saved package (spec, metadata, the MIL program's types), and that the
module handed to Core ML (float 0..255 NCHW in) gives exactly what the ONNX / ExecuTorch
end-to-end module gives on the same image."""
import importlib.util
import json

import pytest
import torch

from backbones.export.contract import end_to_end
from backbones.export.prepare import prepare_for_export
from backbones.export.targets import DenseDetector, SegmentorLogits, Target, build_target
from backbones.runtime.models import build_model_from_config

from .conftest import ROOT

ct = pytest.importorskip('coremltools', reason='the [export] extra is not installed')
coreml = pytest.importorskip('backbones.export.coreml')

SIZE = (128, 160)
DET = ROOT / 'configs' / 'detection'
SEG = ROOT / 'configs' / 'segmentation'
RETINANETS = ['retinanet_edgevit-xxs_fpn_8xb2-1x_coco.py', 'retinanet_efficientformerv2-s0_fpn_8xb2-1x_coco.py']
SEGMENTORS = ['fpn_edgevit-xxs_8xb4-40k_ade20k-512x512.py', 'fpn_efficientformerv2-s0_8xb4-40k_ade20k-512x512.py']
MEAN, STD = [123.675, 116.28, 103.53], [58.395, 57.12, 57.375]


def _retinanet(config, size=SIZE):
    model, _ = build_model_from_config(str(DET / config))
    with torch.no_grad():  # hundreds of (anchor, class) pairs above the threshold: NMS has work
        model.bbox_head.retina_cls.weight.mul_(0.05)
        model.bbox_head.retina_cls.bias.fill_(-2.8)
    model.eval()
    target = Target('retinanet', DenseDetector(prepare_for_export(model, size)).eval(), size, model, 'retinanet')
    return end_to_end(target, config=config)


def _segmentor(config, size=SIZE):
    model, _ = build_model_from_config(str(SEG / config))
    model.eval()
    return end_to_end(Target('fpn', SegmentorLogits(prepare_for_export(model, size)).eval(), size, model,
                             'segmentor'), config=config)


def _image(seed=0, size=SIZE):
    return torch.randint(0, 256, (1, *size, 3), dtype=torch.uint8, generator=torch.Generator().manual_seed(seed))


def _spec(path):
    return ct.models.MLModel(str(path), skip_model_load=True).get_spec()


# ---------------------------------------------------------------------------- fast
@pytest.fixture(scope='module')
def retinanet():
    """The end-to-end RetinaNet EdgeViT-XXS target at SIZE (random weights, busy NMS)."""
    return _retinanet(RETINANETS[0])


def test_detector_handed_to_coreml_equals_the_end_to_end_contract(retinanet):
    """The Core ML module (float 0..255 NCHW image in, int32 labels) gives exactly the ONNX /
    ExecuTorch end-to-end module's boxes, scores and labels on the same image."""
    target = retinanet
    image = _image()
    adapted, x = coreml.coreml_target(target, image)
    assert isinstance(adapted.module, coreml.CoreMLDetector)
    assert x.shape == (1, 3, *SIZE) and x.dtype == torch.float32 and x.is_contiguous()
    assert torch.equal(x, image.permute(0, 3, 1, 2).float())
    with torch.no_grad():
        expected = target.module(image)
        # the same pixels in the same memory layout (the contract permutes NHWC): bit for bit
        ours = adapted.module(image.permute(0, 3, 1, 2).float())
        contiguous = adapted.module(x)
    assert [o.dtype for o in ours] == [torch.float32, torch.float32, torch.int32]
    assert int((expected[2] >= 0).sum()) > 50  # real detections, not only padding
    assert torch.equal(ours[0], expected[0]) and torch.equal(ours[1], expected[1])
    assert torch.equal(ours[2].long(), expected[2])
    # the contiguous image Core ML is traced with: other conv kernels, float rounding only
    assert torch.equal(contiguous[2], ours[2])
    torch.testing.assert_close(contiguous[0], ours[0], rtol=1e-4, atol=1e-2)  # pixels: kernels vary with threads
    torch.testing.assert_close(contiguous[1], ours[1], rtol=0, atol=1e-5)
    meta = adapted.meta
    assert meta['input_layout'] == 'NCHW' and meta['input_dtype'] == 'image' and meta['input_range'] == [0, 255]
    assert meta['output_dtypes'] == {'boxes': 'float32', 'scores': 'float32', 'labels': 'int32'}
    assert len(meta['classes']) == 80 and meta['mean'] == MEAN and meta['std'] == STD
    assert coreml.coreml_metadata(meta) == meta  # idempotent: attaching it again changes nothing


def test_segmentor_handed_to_coreml_equals_the_end_to_end_contract():
    target = _segmentor(SEGMENTORS[0])
    image = _image(1)
    adapted, x = coreml.coreml_target(target, image)
    with torch.no_grad():
        expected = target.module(image)
        ours = adapted.module(image.permute(0, 3, 1, 2).float())
    assert ours.dtype == torch.int32 and ours.shape == (1, *SIZE)
    assert torch.equal(ours, expected.to(torch.int32))
    assert adapted.meta['output_dtypes'] == {'seg_map': 'int32'} and len(adapted.meta['classes']) == 150


def test_bgr_trained_network_gets_its_channels_reversed():
    """A config without bgr_to_rgb trains on BGR: the Core ML image (RGB) is reversed in the
    graph, as the uint8 contract does."""
    from backbones.export.contract import ImageInput
    image = _image(2)
    for bgr_to_rgb in (True, False):
        contract = ImageInput(MEAN, STD, bgr_to_rgb)
        ours = coreml.CoreMLImage.like(contract)
        assert torch.equal(ours(image.permute(0, 3, 1, 2).float().contiguous()), contract(image))


def test_end_to_end_kinds_without_a_core_ml_version_are_refused():
    """An end-to-end export Core ML has no version of (e.g. a future Mask R-CNN) is refused
    with the reason, not converted with a uint8 tensor input; raw exports pass unchanged."""
    image = _image(size=(64, 64))
    e2e = Target('mask_rcnn', torch.nn.Identity(), (64, 64), kind='two-stage', meta={'task': 'x'}, example=image)
    with pytest.raises(NotImplementedError, match='--raw'):
        coreml.coreml_target(e2e, image)
    raw = Target('mask_rcnn', torch.nn.Identity(), (64, 64), kind='two-stage')
    x = torch.rand(1, 3, 64, 64)
    assert coreml.coreml_target(raw, x) == (raw, x)


def test_too_many_anchor_class_pairs_are_refused():
    """Core ML divides the ranked indices in float32: past 2^24 pairs a level is refused."""
    from backbones.export.postprocess import RetinaNetPostprocess
    model, _ = build_model_from_config(str(DET / RETINANETS[1]))
    head = model.bbox_head

    def post(h, w):
        strides = [s[0] for s in head.prior_generator.strides]
        return RetinaNetPostprocess(head, (h, w), [(-(-h // s), -(-w // s)) for s in strides])

    coreml.check_index_range(post(800, 1344))  # 12.1M pairs at stride 8
    with pytest.raises(ValueError, match='smaller size'):
        coreml.check_index_range(post(1024, 2048))


def test_topk_indices_stay_int32(tmp_path):
    """coremltools' add_int16_cast pass turns topk indices into uint16, which wraps any index
    past 65535 (coremltools 9.0's default pipeline gives this very module ('topk', 'UINT16'));
    the export leaves that pass out."""

    class TopK(torch.nn.Module):
        def forward(self, x):
            values, indices = torch.topk(x.reshape(-1), 5)
            return values, indices.to(torch.int32)

    x = torch.rand(1, 4, 160, 160)  # 102400 elements
    ops = coreml.program_ops(coreml.convert(TopK().eval(), x).get_spec())
    assert ('topk', 'INT32') in ops, ops
    assert not {dtype for _, dtype in ops} & {'UINT16', 'INT16', 'INT64'}, ops


class _Post(torch.nn.Module):
    """RetinaNet's post-processing alone, its raw head outputs flattened into one input."""
    fp32_after_topk = True
    output_names = ['boxes', 'scores', 'labels']
    meta = {'output_dtypes': {'labels': 'int32'}}

    def __init__(self, post, shapes):
        super().__init__()
        self.post, self.shapes = post, shapes

    def forward(self, flat):
        outs, i = [], 0
        for shape in self.shapes:
            n = shape.numel()
            outs.append(flat[:, i:i + n].reshape(shape))
            i += n
        k = len(outs) // 2
        boxes, scores, labels = self.post(outs[:k], outs[k:])
        return boxes, scores, labels.to(torch.int32)


def _evaluate_mil(program, x):
    """Run a MIL program's main function on ``x`` with coremltools' own numpy implementations
    of its ops (``value_inference``; reshape and scatter, which have none for non-constant
    inputs, here). A reference for what the program means, not the Core ML runtime."""
    import numpy as np
    func = program.functions['main']

    def assign(var, value):
        box = var.sym_type()
        box.val = value
        var._sym_val = box

    (image,) = func.inputs.values()
    assign(image, x.numpy())
    for op in func.operations:
        if op.op_type == 'const':
            continue
        if op.op_type == 'reshape':
            out = op.x.val.reshape(op.shape.val)
        elif op.op_type == 'scatter':
            assert op.mode.val == 'update'
            axis = int(op.axis.val)
            data = np.moveaxis(op.data.val, axis, 0).copy()
            data[op.indices.val] = np.moveaxis(op.updates.val, axis, 0)
            out = np.moveaxis(data, 0, axis)
        else:
            out = op.value_inference()
        for var, value in zip(op.outputs, out if isinstance(out, (tuple, list)) else (out,)):
            assign(var, value)
    return [torch.from_numpy(np.asarray(v.val)) for v in func.outputs]


def _op_dtypes(program):
    from coremltools.converters.mil.mil import types
    return {(op.op_type, types.builtin_to_string(op.outputs[0].dtype))
            for op in program.functions['main'].operations if op.outputs}


def test_post_processing_program_computes_what_pytorch_does(retinanet):
    """The converted MIL program of RetinaNet's post-processing (top-k, gathers, decoding,
    batched-NMS offsets, the unrolled greedy NMS, padding), after coremltools' passes with our
    settings, evaluated op by op with coremltools' reference implementations, gives PyTorch's
    detections: a check of the conversion's meaning here, without macOS."""
    e2e = retinanet.module
    with torch.no_grad():
        raw = e2e.network(e2e.image_input(_image()))
    flat = torch.cat([r.reshape(1, -1) for r in raw], 1)
    post = _Post(e2e.post, [r.shape for r in raw]).eval()
    with torch.no_grad():
        boxes, scores, labels = post(flat)
    program = coreml.convert(post, flat, convert_to='milinternal')
    ops = _op_dtypes(program)
    assert ('topk', 'fp32') in ops and ('real_div', 'fp32') in ops and ('reduce_argmax', 'int32') in ops
    assert not any(dtype == 'fp16' for _, dtype in ops), ops  # all of it stays float32 ...
    post.fp32_after_topk = False  # ... which Core ML's fp16 default would not do
    assert ('real_div', 'fp16') in _op_dtypes(coreml.convert(post, flat, convert_to='milinternal'))
    post.fp32_after_topk = True
    mil_boxes, mil_scores, mil_labels = _evaluate_mil(program, flat)
    assert mil_boxes.dtype == torch.float32 and mil_labels.dtype == torch.int32
    assert int((labels >= 0).sum()) == 100  # 100 kept out of hundreds of candidates
    assert torch.equal(mil_labels, labels)
    torch.testing.assert_close(mil_boxes, boxes, rtol=0, atol=1e-3)
    torch.testing.assert_close(mil_scores, scores, rtol=0, atol=1e-6)


def test_backbone_converts_with_an_image_input(tmp_path, monkeypatch):
    """EdgeViT-XXS (the family whose conversion failed: rank > 5) at 64x64; the package
    coremltools converts into the temporary folder is gone once the export is saved."""
    import tempfile
    from backbones.export.convert import export
    scratch = tmp_path / 'scratch'
    scratch.mkdir()
    monkeypatch.setattr(tempfile, 'tempdir', str(scratch))
    result = export(build_target('edgevit_xxs', (64, 64)), 'coreml', str(tmp_path / 'out'))
    assert not list(scratch.glob('*.mlpackage'))
    assert result.path.endswith('.mlpackage') and 'macOS' in result.note
    summary = coreml.package_summary(result.path)
    assert summary['inputs'] == {'image': dict(type='image', height=64, width=64, color_space='RGB')}
    assert list(summary['outputs']) == ['feat0', 'feat1', 'feat2', 'feat3']
    assert {o['dtype'] for o in summary['outputs'].values()} == {'float32'}
    assert summary['outputs']['feat0']['shape'] == [1, 36, 16, 16]
    meta = summary['meta']
    assert meta['task'] == 'backbone' and meta['model'] == 'edgevit_xxs' and meta['input_size'] == [64, 64]
    assert meta['mean'] == MEAN and meta['std'] == STD and meta['color_order'] == 'RGB'
    assert meta['weights'] == 'random' and meta['checkpoint'] is None and 'edgeformers_version' in meta
    assert coreml.check_package(result.path, meta) == []
    assert not set(summary['program_types']) & {'UINT16', 'INT16', 'INT64'}
    # the check sees a package that does not match its metadata
    wrong = dict(meta, input_size=[64, 96], output_dtypes=dict(meta['output_dtypes'], feat3='int32'))
    problems = coreml.check_package(result.path, wrong)
    assert len(problems) == 2 and 'image input 64x64' in problems[0] and 'feat3' in problems[1], problems


# ---------------------------------------------------------------------------- slow
@pytest.mark.slow
@pytest.mark.parametrize('name', ['edgevit_xxs', 'efficientformerv2_s0'])
def test_backbones_convert(name, tmp_path):
    from backbones.export.convert import export
    result = export(build_target(name, SIZE), 'coreml', str(tmp_path))
    summary = coreml.package_summary(result.path)
    print(f'{name} {SIZE}: {result.describe()}; {summary["outputs"]}')
    assert summary['inputs']['image'] == dict(type='image', height=SIZE[0], width=SIZE[1], color_space='RGB')
    assert len(summary['outputs']) == 4 and coreml.check_package(result.path, summary['meta']) == []
    assert ('conv', 'FLOAT16') in coreml.program_ops(_spec(result.path))  # Core ML's fp16 default


@pytest.mark.slow
@pytest.mark.parametrize('config', RETINANETS)
def test_retinanet_converts_end_to_end(config, tmp_path):
    from backbones.export.contract import export_end_to_end, read_metadata
    target = _retinanet(config)
    result = export_end_to_end(target, 'coreml', str(tmp_path), example=_image())
    summary = coreml.package_summary(result.path)
    print(f'{config}: {result.describe()}; {summary["program_types"]}')
    assert summary['inputs'] == {'image': dict(type='image', height=SIZE[0], width=SIZE[1], color_space='RGB')}
    assert summary['outputs'] == {'boxes': dict(dtype='float32', shape=[100, 4]),
                                  'scores': dict(dtype='float32', shape=[100]),
                                  'labels': dict(dtype='int32', shape=[100])}
    meta = read_metadata(result.path)
    assert meta == summary['meta']
    assert meta['task'] == 'detection' and len(meta['classes']) == 80 and meta['classes'][0] == 'person'
    assert meta['score_threshold'] == 0.05 and meta['iou_threshold'] == 0.5 and meta['max_detections'] == 100
    assert meta['config'] == config and meta['weights'] == 'random' and meta['mean'] == MEAN
    assert meta['output_dtypes']['labels'] == 'int32' and meta['input_dtype'] == 'image'
    assert coreml.check_package(result.path, meta) == []
    ops = coreml.program_ops(_spec(result.path))
    assert not {dtype for _, dtype in ops} & {'UINT16', 'INT16', 'INT64'}, ops
    # fp16 network, fp32 post-processing: ranking, decoding, IoU and the unrolled NMS
    assert ('conv', 'FLOAT16') in ops and ('conv', 'FLOAT32') not in ops
    assert ('topk', 'FLOAT32') in ops and ('topk', 'FLOAT16') not in ops
    assert ('exp', 'FLOAT32') in ops and ('real_div', 'FLOAT32') in ops  # box decoding, IoU
    assert ops.get(('reduce_argmax', 'INT32')) == 100  # the NMS picks, one per detection
    mlmodel = ct.models.MLModel(str(result.path), skip_model_load=True)
    assert 'classes' in mlmodel.output_description['labels']


@pytest.mark.slow
@pytest.mark.parametrize('config', SEGMENTORS)
def test_segmentor_converts_end_to_end(config, tmp_path):
    from backbones.export.contract import export_end_to_end, read_metadata
    result = export_end_to_end(_segmentor(config), 'coreml', str(tmp_path), example=_image(1))
    summary = coreml.package_summary(result.path)
    print(f'{config}: {result.describe()}; {summary["program_types"]}')
    assert summary['outputs'] == {'seg_map': dict(dtype='int32', shape=[1, *SIZE])}
    meta = read_metadata(result.path)
    assert meta['task'] == 'segmentation' and len(meta['classes']) == 150 and meta['config'] == config
    assert meta['output_dtypes'] == {'seg_map': 'int32'} and meta['compute_precision'] == 'float16'
    assert coreml.check_package(result.path, meta) == []


def _tool():
    spec = importlib.util.spec_from_file_location('export_tool', ROOT / 'tools' / 'export.py')
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.slow
def test_export_tool_writes_coreml_packages(tmp_path, capsys):
    """tools/export.py --formats coreml: a RetinaNet config end to end and a backbone."""
    main = _tool().main
    config = str(DET / RETINANETS[1])
    with pytest.warns(UserWarning, match='random weights'):
        assert main([config, '--size', '64', '96', '--formats', 'coreml', '--out-dir', str(tmp_path)]) == 0
    package = tmp_path / 'retinanet_efficientformerv2-s0_fpn_8xb2-1x_coco_64x96.mlpackage'
    out = capsys.readouterr().out
    assert package.is_dir() and 'macOS' in out, out
    meta = coreml.package_summary(str(package))['meta']
    assert meta['config'] == config and meta['input_size'] == [64, 96] and meta['task'] == 'detection'
    assert coreml.check_package(str(package), meta) == []
    with pytest.warns(UserWarning, match='random weights'):
        assert main(['efficientformerv2_s0', '--size', '64', '64', '--formats', 'coreml', '--out-dir',
                     str(tmp_path)]) == 0
    summary = coreml.package_summary(str(tmp_path / 'efficientformerv2_s0_64x64.mlpackage'))
    assert summary['meta']['task'] == 'backbone' and summary['inputs']['image']['color_space'] == 'RGB'
    assert json.dumps(summary['meta'])  # plain JSON values throughout
