"""Export to ExecuTorch (XNNPACK) and ONNX with parity against eager PyTorch; detectors'
host-side post-processing against mmdet's own predict; Core ML conversion."""
import pytest
import torch

from backbones.export.prepare import prepare_for_export
from backbones.export.convert import export
from backbones.export.formats import MissingExtra, require, run_exported
from backbones.export.targets import (DenseDetector, Target, build_target, mask_rcnn_postprocess,
                                      retinanet_postprocess)
from backbones.runtime.models import image_meta

from backbones.runtime.models import build_model_from_config

from .conftest import ROOT

pytest.importorskip('executorch', reason='the [export] extra is not installed')
SIZE = (128, 160)
DET = ROOT / 'configs' / 'detection'


@pytest.mark.slow  # lowers a graph
@pytest.mark.parametrize('name', ['edgevit_xxs', 'efficientformerv2_s0'])
@pytest.mark.parametrize('fmt', ['executorch', 'onnx'])
def test_backbone_exports_match_eager(name, fmt, tmp_path):
    target = build_target(name, SIZE)
    result = export(target, fmt, str(tmp_path))
    assert result.max_rel_diff < 1e-4, result.describe()
    if fmt == 'executorch':
        assert result.delegated_fraction == 1.0 and not result.not_delegated, result.describe()


@pytest.mark.slow  # lowers a graph
def test_efficientformerv2_int8_runs_in_executorch(tmp_path):
    """int8 (XNNPACK quantizer, static, per-channel): fully delegated, runs (XNNPACK used to
    reject the quantised 1x1 average pool at run time), and XNNPACK's integer kernels agree
    with PyTorch's simulation of the quantised graph to a few quantisation steps. (EdgeViT
    int8 is exercised by tools/benchmark.py; each int8 export takes a minute or two.)"""
    size = (64, 96)
    calibration = [torch.rand(1, 3, *size, generator=torch.Generator().manual_seed(i)) for i in range(2)]
    result = export(build_target('efficientformerv2_s0', size), 'executorch-int8', str(tmp_path),
                    example=calibration[0], calibration=calibration)
    assert result.delegated_fraction == 1.0 and not result.not_delegated, result.describe()
    assert result.max_rel_diff < 0.05, result.describe()


@pytest.mark.slow  # lowers a graph
@pytest.mark.parametrize('fmt', ['executorch', 'onnx'])
def test_segmentor_exports_match_eager(fmt, tmp_path):
    config = ROOT / 'configs' / 'segmentation' / 'fpn_edgevit-xxs_8xb4-40k_ade20k-512x512.py'
    target = build_target(str(config), SIZE)
    assert target.kind == 'segmentor'
    result = export(target, fmt, str(tmp_path))
    assert result.max_rel_diff < 1e-4, result.describe()
    with torch.no_grad():
        logits = target.module(torch.zeros(1, 3, *SIZE))
    assert logits.shape == (1, 150, *SIZE)


def _image(seed=0):
    return torch.randn(1, 3, *SIZE, generator=torch.Generator().manual_seed(seed))


def _same_predictions(a, b):
    a, b = a.pred_instances, b.pred_instances
    assert len(a) == len(b) > 0
    assert a.scores.max() < 0.999 and len(a.scores.unique()) == len(a.scores)  # no ties to order arbitrarily
    assert torch.equal(a.labels, b.labels)
    torch.testing.assert_close(a.scores, b.scores, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(a.bboxes, b.bboxes, rtol=1e-4, atol=1e-2)


@pytest.mark.slow  # lowers a graph
def test_retinanet_executorch_plus_host_equals_mmdet_predict(tmp_path):
    from mmdet.structures import DetDataSample
    model, _ = build_model_from_config(str(DET / 'retinanet_edgevit-xxs_fpn_8xb2-1x_coco.py'))
    with torch.no_grad():
        # scores spread over (0, 1) without ties, so that there is plenty to keep, rank and suppress
        model.bbox_head.retina_cls.weight.mul_(0.02)
        model.bbox_head.retina_cls.bias.zero_()
    model.eval()
    target = Target('retinanet', DenseDetector(prepare_for_export(model, SIZE)).eval(), SIZE, model, 'retinanet')
    x = _image()
    result = export(target, 'executorch', str(tmp_path), example=x)
    assert result.max_rel_diff < 1e-4, result.describe()
    # everything but the FPN's nearest-neighbour upsampling (XNNPACK has none) is delegated
    assert set(result.not_delegated) == {'aten.upsample_nearest2d.vec'}, result.describe()
    meta = image_meta(SIZE)
    with torch.no_grad():
        expected = model.predict(x, [DetDataSample(metainfo=meta)], rescale=True)[0]
    ours = retinanet_postprocess(model, run_exported(result.path, x), meta)
    _same_predictions(ours, expected)


@pytest.mark.slow  # lowers a graph
def test_mask_rcnn_onnx_plus_host_equals_mmdet_predict(tmp_path):
    """Two exact steps: the exported dense outputs equal eager ones (1e-4), and the host-side
    RPN + RoI stages on the dense outputs give exactly mmdet's predict. (With random weights
    the class scores of all RoIs lie within 1e-3 of each other, so comparing end to end would
    test the order of near-ties, not the pipeline.)"""
    from mmdet.structures import DetDataSample
    model, _ = build_model_from_config(str(DET / 'mask-rcnn_efficientformerv2-s0_fpn_8xb2-1x_coco.py'))
    with torch.no_grad():
        model.roi_head.bbox_head.fc_cls.bias[:3] = 4.0  # three likely classes: scores above the 0.05 threshold
    model.eval()
    # the detector as exported (prepare_for_export's rewrites round floats differently, ~3e-8,
    # which may swap near-tied random scores): mmdet's predict of that same detector
    model = prepare_for_export(model, SIZE)
    target = Target('mask_rcnn', DenseDetector(model).eval(), SIZE, model, 'two-stage')
    x = _image(1)
    result = export(target, 'onnx', str(tmp_path), example=x)
    assert result.max_rel_diff < 1e-4, result.describe()
    assert len(run_exported(result.path, x)) == 5 + 2 * 5  # FPN levels, RPN scores and deltas per level
    meta = image_meta(SIZE)
    with torch.no_grad():
        expected = model.predict(x, [DetDataSample(metainfo=meta)], rescale=True)[0].pred_instances
        ours = mask_rcnn_postprocess(model, target.module(x), meta).pred_instances
    assert len(ours) == len(expected) > 0
    for key in ('labels', 'scores', 'bboxes', 'masks'):
        assert torch.equal(getattr(ours, key), getattr(expected, key)), key


@pytest.mark.slow  # lowers a graph
def test_coreml_conversion_of_a_backbone(tmp_path):
    pytest.importorskip('coremltools')
    result = export(build_target('efficientformerv2_s0', SIZE), 'coreml', str(tmp_path))
    assert result.path.endswith('.mlpackage') and result.size_bytes > 1e6
    assert 'macOS' in result.note


def test_missing_extra_names_the_extra(monkeypatch):
    import importlib.util
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, 'find_spec', lambda name, *a: None if name == 'litert_torch' else real(name, *a))
    with pytest.raises(MissingExtra, match=r'edgeformers\[tflite\]'):
        require('tflite')


@pytest.mark.slow  # lowers a graph
def test_tflite_format_exports_or_names_its_extra(tmp_path, capsys):
    """Where the [tflite] extra (litert-torch) is installed, the export matches eager; where it
    is not (CI's main environment), tools/export.py reports the format as skipped, names the
    extra to install, writes nothing for it and exits non-zero."""
    import importlib.util
    if importlib.util.find_spec('litert_torch') is not None:
        result = export(build_target('efficientformerv2_s0', SIZE), 'tflite', str(tmp_path))
        assert result.path.endswith('.tflite') and result.max_rel_diff < 1e-4, result.describe()
        return
    from .conftest import load_tool
    with pytest.warns(UserWarning, match='random weights'):
        status = load_tool('export').main(['efficientformerv2_s0', '--size', str(SIZE[0]), str(SIZE[1]),
                                            '--formats', 'tflite', '--out-dir', str(tmp_path)])
    out = capsys.readouterr().out
    assert status == 1 and 'tflite' in out and 'skipped' in out and 'edgeformers[tflite]' in out
    assert not list(tmp_path.glob('*.tflite'))


class _SharedHead(torch.nn.Module):
    """Two levels, each returned and also read (through a ReLU) by one convolution shared
    between them, as an FPN detector's head reads its levels."""

    def __init__(self):
        super().__init__()
        self.stem = torch.nn.Conv2d(3, 8, 3, padding=1)
        self.down = torch.nn.Conv2d(8, 8, 3, stride=2, padding=1)
        self.head = torch.nn.Conv2d(8, 4, 3, padding=1)

    def forward(self, x):
        a = self.stem(x)
        b = self.down(a)
        return a, b, self.head(torch.relu(a)), self.head(torch.relu(b))


@pytest.mark.slow  # lowers a graph
def test_int8_quantises_a_shared_head_on_every_level(tmp_path):
    """A convolution shared between levels is quantised at every call (it used to be at the
    first only: int8 inputs with float weights, which XNNPACK refused at load time), and a
    level both returned and read inside the graph gets a dequantize node of its own for the
    output (ExecuTorch's channels-last pass failed on the shared one in the Mask R-CNN graph,
    ``KeyError: 'val'``; this small graph does not trip it). The .pte loads, runs, and agrees
    with PyTorch's simulation of the quantised graph to a few quantisation steps."""
    from backbones.export.convert import quantize_int8
    from backbones.export.formats import executorch_runner, write_executorch
    torch.manual_seed(0)
    model = _SharedHead().eval()
    calibration = [torch.rand(1, 3, 32, 32, generator=torch.Generator().manual_seed(i)) for i in range(4)]
    quantised = quantize_int8(model, calibration[0], calibration)
    convs = [n for n in quantised.graph.nodes if n.target == torch.ops.aten.conv2d.default]
    assert len(convs) == 4
    for conv in convs:
        assert 'dequantize' in str(conv.args[0].target) and 'dequantize' in str(conv.args[1].target), conv.name
    output = next(n for n in quantised.graph.nodes if n.op == 'output')
    returned = [n for n in output.all_input_nodes if 'dequantize' in str(n.target)]
    assert len(returned) == 4 and all(len(n.users) == 1 for n in returned)
    path = str(tmp_path / 'shared.pte')
    written = write_executorch(quantised, calibration[0], path)
    assert written.delegated_fraction == 1.0, written.not_delegated
    outputs = executorch_runner(path)(calibration[1])
    with torch.no_grad():
        expected = quantised(calibration[1])
    for got, want in zip(outputs, expected):
        step = (want.max() - want.min()).item() / 255
        assert (got - want).abs().max().item() <= 3 * step



@pytest.mark.slow  # lowers a graph
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


def test_nan_is_never_a_match():
    """Parity with NaN or infinity on either side is refused, not reported as a zero difference."""
    from backbones.export.convert import NonFiniteOutputError, compare
    good = [torch.tensor([1.0, 2.0]), torch.tensor([3, 4])]
    assert compare(good, good) == (0.0, 0.0)
    nan = [torch.tensor([float('nan'), 2.0]), torch.tensor([3, 4])]
    for eager, exported, side in ((nan, nan, 'eager PyTorch'), (good, [torch.tensor([1.0, float('inf')]), good[1]],
                                                                 'the export')):
        with pytest.raises(NonFiniteOutputError, match=f'{side} gives NaN or infinite values .output 0: 1 of 2'):
            compare(eager, exported)


def test_weights_that_are_not_finite_are_refused_before_exporting(tmp_path):
    from backbones.checkpoints.io import CheckpointFileError
    target = build_target('efficientformerv2_s0', (64, 64))
    with torch.no_grad():
        next(target.module.parameters()).fill_(float('nan'))
    with pytest.raises(CheckpointFileError, match="efficientformerv2_s0's weights: 1 of its .* NaN or infinite"):
        export(target, 'onnx', str(tmp_path))
    assert list(tmp_path.iterdir()) == []

