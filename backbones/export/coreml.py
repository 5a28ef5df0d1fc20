"""Core ML export as an app uses it: one ``.mlpackage`` with an image input, named outputs,
class names and the rest of the metadata.

Core ML has no uint8 NHWC tensor input for pictures: an image input (``ct.ImageType``,
RGB) hands the program a float ``[1, 3, H, W]`` of 0..255 values, so the Core ML version of
an end-to-end target (:func:`coreml_target`) takes that instead of the ONNX / ExecuTorch
uint8 ``[1, H, W, 3]`` and applies the per-channel normalisation in the graph (the image
input's ``scale`` is one scalar, the configs' std is not). The network and RetinaNet's
post-processing are the very modules of :mod:`.contract` and :mod:`.postprocess`.

Core ML multiarrays are Float32, Float16 or Int32: ``labels`` and ``seg_map`` are int32
(``output_dtypes`` in the metadata says so). Precision: the network computes in float16 (Core
ML's default, what the GPU and Neural Engine run); RetinaNet's post-processing (score
ranking, box decoding, the class offsets of batched NMS, IoU) stays float32: box coordinates
offset by ``label * (max coordinate + 1)`` reach 10^5, past float16's 65504. coremltools'
``add_int16_cast`` pass is left out: it narrows ``topk`` indices to uint16, which corrupts any
index above 65535 (RetinaNet ranks hundreds of thousands of (anchor, class) pairs). Two more
conversion details: ``a & b`` on bool masks is converted as ``logical_and`` (coremltools has no
``__and__``), and coremltools divides integers in float32, so a RetinaNet export whose finest
level has 2^24 (anchor, class) pairs or more is refused (:func:`check_index_range`).

Running a Core ML model needs macOS; here the saved package is checked by
:func:`check_package` (inputs, outputs, dtypes, metadata, the program's integer types).
"""
from __future__ import annotations

import json
from typing import Dict, List, Optional, Sequence, Tuple

import torch
import torch.nn as nn

from ..fileio import atomic_path
from .targets import IMAGENET_MEAN, IMAGENET_STD, Target, package_version

# This module imports neither .contract nor .formats / .convert (which import it): it knows the
# end-to-end modules of .contract by their parts (image_input, network, post).

#: what the exported package says about running it
PREDICTION_NOTE = 'converted and checked (spec, metadata, program types); running a Core ML model needs macOS'
RAW_NOTE = 'raw network, float tensor input; converted and checked (program types); running it needs macOS'


class CoreMLImage(nn.Module):
    """Core ML's image input (float ``[1, 3, H, W]``, 0..255, RGB) -> the normalised
    ``[1, 3, H, W]`` the network was trained on: the same mean, std and channel order as
    :class:`.contract.ImageInput`, without its uint8 NHWC -> NCHW step."""

    def __init__(self, mean: Sequence[float], std: Sequence[float], bgr_to_rgb: bool = True) -> None:
        super().__init__()
        self.reverse = not bgr_to_rgb
        self.register_buffer('mean', torch.tensor(mean, dtype=torch.float32).view(1, 3, 1, 1), persistent=False)
        self.register_buffer('std', torch.tensor(std, dtype=torch.float32).view(1, 3, 1, 1), persistent=False)

    @classmethod
    def like(cls, image_input: nn.Module) -> 'CoreMLImage':
        """The same normalisation as a :class:`.contract.ImageInput`."""
        out = cls((0., 0., 0.), (1., 1., 1.), not image_input.reverse)
        out.mean.copy_(image_input.mean)
        out.std.copy_(image_input.std)
        return out

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        x = image.flip(1) if self.reverse else image
        return (x - self.mean) / self.std


class CoreMLModel(nn.Module):
    """Image -> named outputs; ``meta`` is the package's metadata, ``output_names`` its outputs,
    ``fp32_after_topk`` keeps the post-processing in float32 (RetinaNet)."""
    output_names: List[str]
    fp32_after_topk = False

    def __init__(self, image: CoreMLImage, network: nn.Module, meta: Dict[str, object]) -> None:
        super().__init__()
        self.image_input = image
        self.network = network
        self.meta = meta


class CoreMLBackbone(CoreMLModel):
    """Image -> the backbone's feature maps ``feat0`` ... (float32, NCHW)."""

    def __init__(self, image: CoreMLImage, network: nn.Module, meta: Dict[str, object]) -> None:
        super().__init__(image, network, meta)
        self.output_names = list(meta['outputs'])

    def forward(self, image: torch.Tensor):
        out = self.network(self.image_input(image))
        return tuple(out) if isinstance(out, (tuple, list)) else out


class CoreMLDetector(CoreMLModel):
    """Image -> ``boxes`` float32 [K, 4], ``scores`` float32 [K], ``labels`` int32 [K]: the
    network and :class:`.postprocess.RetinaNetPostprocess` of a :class:`.contract.EndToEndDetector`."""
    output_names = ['boxes', 'scores', 'labels']
    fp32_after_topk = True

    def __init__(self, e2e: nn.Module, meta: Dict[str, object]) -> None:
        super().__init__(CoreMLImage.like(e2e.image_input), e2e.network, meta)
        self.post = e2e.post

    def forward(self, image: torch.Tensor):
        outputs = self.network(self.image_input(image))
        n = len(outputs) // 2
        boxes, scores, labels = self.post(list(outputs[:n]), list(outputs[n:]))
        return boxes, scores, labels.to(torch.int32)


class CoreMLSegmentor(CoreMLModel):
    """Image -> ``seg_map`` int32 [1, H, W], the argmax class after the resize (the network of
    a :class:`.contract.EndToEndSegmentor`)."""
    output_names = ['seg_map']

    def __init__(self, e2e: nn.Module, meta: Dict[str, object]) -> None:
        super().__init__(CoreMLImage.like(e2e.image_input), e2e.network, meta)

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        return self.network(self.image_input(image)).argmax(1).to(torch.int32)


# ---------------------------------------------------------------------------- metadata
OUTPUT_DTYPES = {'detection': {'boxes': 'float32', 'scores': 'float32', 'labels': 'int32'},
                 'segmentation': {'seg_map': 'int32'}}


def coreml_metadata(meta: Dict[str, object]) -> Dict[str, object]:
    """The Core ML version of an end-to-end artifact's metadata (:func:`.contract.metadata`):
    the same keys, with the input and output types this package really has. Idempotent."""
    out = dict(meta)
    out.update(input_layout='NCHW', input_dtype='image', input_range=[0, 255], color_order='RGB',
               normalization='in graph: (pixel - mean) / std per channel')
    if out.get('task') in OUTPUT_DTYPES:
        out['output_dtypes'] = OUTPUT_DTYPES[out['task']]
    out['compute_precision'] = ('float16 network, float32 post-processing' if out.get('task') == 'detection'
                                else 'float16')
    return out


def backbone_metadata(name: str, size: Tuple[int, int], mean: Sequence[float], std: Sequence[float],
                      num_outputs: int, checkpoint: Optional[str] = None) -> Dict[str, object]:
    """Metadata of a backbone package (the keys of :func:`.contract.metadata` that apply):
    the variant, its normalisation, feature maps out."""
    outputs = [f'feat{i}' for i in range(num_outputs)]
    return coreml_metadata(dict(
        task='backbone', model=name, input_name='image', input_size=[int(size[0]), int(size[1])],
        color_order='RGB', mean=list(mean), std=list(std), outputs=outputs,
        output_dtypes={o: 'float32' for o in outputs}, config=None, checkpoint=checkpoint or None,
        weights='checkpoint' if checkpoint else 'random', edgeformers_version=package_version()))


#: coremltools converts integer floor division through float32, exact below 2^24
MAX_PAIRS = 2 ** 24


def check_index_range(post) -> None:
    """RetinaNet splits a ranked (anchor, class) index into anchor and class with a floor
    division, which coremltools computes in float32: exact while every level has fewer than
    2^24 pairs (800x1344 has 12.1M at stride 8). Raise a clear error past that."""
    pairs = max(getattr(post, f'priors{i}').shape[0] for i in range(post.num_levels)) * post.num_classes
    if pairs >= MAX_PAIRS:
        raise ValueError(f'{pairs} (anchor, class) pairs on the finest level: Core ML computes their indices '
                         f'through float32, exact below {MAX_PAIRS}; export at a smaller size')


def coreml_target(target: Target, example: Optional[torch.Tensor] = None) -> Tuple[Target, torch.Tensor]:
    """The Core ML version of a target and of its example input (float ``[1, 3, H, W]``,
    0..255): end-to-end RetinaNet / Semantic FPN and backbones get an image input; raw
    network exports (``--raw``) stay as they are (float tensor input)."""
    h, w = target.size
    end_to_end = target.takes_images and target.meta is not None  # .contract.end_to_end's targets
    if end_to_end and target.kind == 'retinanet':
        check_index_range(target.module.post)
        module = CoreMLDetector(target.module, coreml_metadata(target.meta))
    elif end_to_end and target.kind == 'segmentor':
        module = CoreMLSegmentor(target.module, coreml_metadata(target.meta))
    elif target.takes_images or target.meta is not None:
        raise NotImplementedError(f'no Core ML version of the end-to-end {target.kind} export yet '
                                  '(RetinaNet and Semantic FPN have one); --raw exports the network')
    elif target.kind == 'backbone':
        with torch.no_grad():
            out = target.module(torch.zeros(1, 3, h, w))
        count = len(out) if isinstance(out, (tuple, list)) else 1
        module = CoreMLBackbone(CoreMLImage(IMAGENET_MEAN, IMAGENET_STD), target.module,
                                backbone_metadata(target.name, (h, w), IMAGENET_MEAN, IMAGENET_STD, count,
                                                  target.checkpoint))
    else:
        return target, example
    if example is not None and example.dtype == torch.uint8:  # an end-to-end uint8 NHWC image
        x = example.permute(0, 3, 1, 2).to(torch.float32).contiguous()
    else:  # a float tensor of the raw network: any image will do (no parity check here)
        x = torch.rand(1, 3, h, w, generator=torch.Generator().manual_seed(0)) * 255
    return Target(target.name, module.eval(), target.size, target.full_model, target.kind, meta=module.meta,
                  example=x), x


# ---------------------------------------------------------------------------- conversion
def _after_topk(op) -> set:
    """Names of the ops of ``op``'s block that a ``topk`` reaches, plus the layout ops and the
    sigmoid whose results only go there (RetinaNet's post-processing)."""
    block = op.enclosing_block
    cached = getattr(block, '_edgeformers_fp32', None)
    if cached is not None:
        return cached
    post = set()
    for o in block.operations:
        if o.op_type == 'topk' or any(v.op is not None and v.op.name in post for v in _input_vars(o)):
            post.add(o.name)
    cheap = {'sigmoid', 'reshape', 'transpose', 'squeeze', 'expand_dims', 'slice_by_index'}
    for o in reversed(block.operations):
        children = [c for v in o.outputs for c in v.child_ops]
        if o.op_type in cheap and children and all(c.name in post for c in children):
            post.add(o.name)
    block._edgeformers_fp32 = post
    return post


def _input_vars(op):
    for value in op.inputs.values():
        yield from value if isinstance(value, (tuple, list)) else (value,)


def _bool_ands_as_logical_and(exported) -> int:
    """``a & b`` on bool tensors (RetinaNet's masks) reaches the converter as ``aten.__and__``,
    which coremltools has no converter for; on bools it is ``logical_and``. Returns the count."""
    count = 0
    for node in exported.graph.nodes:
        if node.op == 'call_function' and node.target == torch.ops.aten.__and__.Tensor and all(
                getattr(a, 'meta', {}).get('val') is not None and a.meta['val'].dtype == torch.bool
                for a in node.args[:2]):
            node.target = torch.ops.aten.logical_and.default
            count += 1
    if count:
        exported.graph_module.recompile()
    return count


def convert(module: nn.Module, example: torch.Tensor, convert_to: str = 'mlprogram'):
    """``module`` -> an in-memory ``ct.models.MLModel`` (mlprogram, iOS 17 / macOS 14), not
    loaded (loading needs macOS). A :class:`CoreMLModel` gets an RGB image input ``image`` and
    its named outputs; anything else a float32 tensor input ``x``. ``output_names`` (and the
    ``output_dtypes`` of ``meta``, float32 where not int32) fix the outputs. A module with
    ``fp32_after_topk`` keeps what follows its ``topk`` ops in float32, the rest is float16.
    ``convert_to='milinternal'`` returns the MIL program instead (for inspection)."""
    import coremltools as ct
    import numpy as np
    exported = torch.export.export(module, (example,)).run_decompositions({})
    _bool_ands_as_logical_and(exported)
    pipeline = ct.PassPipeline.DEFAULT
    pipeline.remove_passes({'common::add_int16_cast'})  # narrows topk indices to uint16
    kwargs = {}
    if isinstance(module, CoreMLModel):
        h, w = example.shape[-2:]
        kwargs['inputs'] = [ct.ImageType(name='image', shape=(1, 3, int(h), int(w)), color_layout=ct.colorlayout.RGB)]
    else:
        kwargs['inputs'] = [ct.TensorType(name='x', shape=tuple(example.shape), dtype=np.float32)]
    if getattr(module, 'output_names', None):  # else Core ML's names and types (float16 under fp16)
        dtypes = (getattr(module, 'meta', None) or {}).get('output_dtypes', {})
        kwargs['outputs'] = [ct.TensorType(name=n, dtype=np.int32 if dtypes.get(n) == 'int32' else np.float32)
                             for n in module.output_names]
    if getattr(module, 'fp32_after_topk', False):
        kwargs['compute_precision'] = ct.transform.FP16ComputePrecision(
            op_selector=lambda op: op.name not in _after_topk(op))
    return ct.convert(exported, convert_to=convert_to, minimum_deployment_target=ct.target.iOS17,
                      pass_pipeline=pipeline, skip_model_load=True, **kwargs)


def describe(mlmodel, meta: Dict[str, object]) -> None:
    """Write ``meta`` into the package (user metadata, each value JSON) and describe its
    input and outputs for Xcode and app developers."""
    for key, value in meta.items():
        mlmodel.user_defined_metadata[key] = json.dumps(value)
    task = meta.get('task')
    mlmodel.short_description = f'edgeformers {task} ({meta.get("config") or meta.get("model")})'
    mlmodel.version = str(meta.get('edgeformers_version'))
    names = [d.name for d in mlmodel.get_spec().description.input]
    if 'image' in names:
        h, w = meta['input_size']
        mlmodel.input_description['image'] = (f'RGB image {w}x{h} (width x height); normalisation is inside '
                                              f'the model (mean {meta["mean"]}, std {meta["std"]})')
    docs = {'boxes': 'float32 [K, 4]: x1, y1, x2, y2 in input pixels; rows with label -1 are padding',
            'scores': 'float32 [K]: class score; 0 for padding rows',
            'labels': 'int32 [K]: index into the "classes" user metadata; -1 for padding rows',
            'seg_map': 'int32 [1, H, W]: class index per pixel (into the "classes" user metadata)'}
    for name in (d.name for d in mlmodel.get_spec().description.output):
        if name in docs:
            mlmodel.output_description[name] = docs[name]
        elif task == 'backbone':
            mlmodel.output_description[name] = 'float32 feature map [1, C, H/s, W/s]'


def write(module: nn.Module, example: torch.Tensor, path: str) -> str:
    """Convert, describe, check and save (atomically: the package folder is renamed into
    place); returns the note for the export's report."""
    mlmodel = convert(module, example)
    meta = getattr(module, 'meta', None)
    try:
        if meta:
            describe(mlmodel, meta)
        with atomic_path(path) as tmp:  # a package that fails the check is not put in place
            mlmodel.save(tmp)
            problems = check_package(tmp, meta)
            if problems:
                raise RuntimeError(f'{path}: ' + '; '.join(problems))
    finally:
        discard_temporary_package(mlmodel)
    return PREDICTION_NOTE if meta else RAW_NOTE


def discard_temporary_package(mlmodel) -> None:
    """Remove the package ``ct.convert`` wrote to the temporary folder (tens of MB per model).
    coremltools deletes it only at interpreter exit, which a killed or ``os._exit``-ed process
    (a pytest-xdist worker, a batch job) never reaches."""
    import shutil
    package = getattr(mlmodel, 'package_path', None)
    if getattr(mlmodel, 'is_temp_package', False) and package:
        shutil.rmtree(package, ignore_errors=True)


def attach_metadata(path: str, meta: Dict[str, object]) -> None:
    """:func:`.contract.attach_metadata` for a package: the Core ML version of ``meta``."""
    import coremltools as ct
    mlmodel = ct.models.MLModel(path, skip_model_load=True)
    describe(mlmodel, coreml_metadata(meta))
    with atomic_path(path) as tmp:
        mlmodel.save(tmp)


# ---------------------------------------------------------------------------- checks
_SPEC_DTYPES = {65568: 'float32', 65552: 'float16', 131104: 'int32', 65600: 'float64'}


def package_summary(path: str) -> Dict[str, object]:
    """What a saved package declares: inputs, outputs (dtype, shape), metadata, and the integer
    types of its program's variables."""
    import coremltools as ct
    mlmodel = ct.models.MLModel(path, skip_model_load=True)
    spec = mlmodel.get_spec()
    inputs = {}
    for d in spec.description.input:
        kind = d.type.WhichOneof('Type')
        if kind == 'imageType':
            t = d.type.imageType
            inputs[d.name] = dict(type='image', height=t.height, width=t.width,
                                  color_space=ct.proto.FeatureTypes_pb2.ImageFeatureType.ColorSpace.Name(t.colorSpace))
        else:
            t = d.type.multiArrayType
            inputs[d.name] = dict(type='multiarray', shape=list(t.shape), dtype=_SPEC_DTYPES.get(t.dataType))
    outputs = {}
    for d in spec.description.output:
        t = d.type.multiArrayType
        outputs[d.name] = dict(dtype=_SPEC_DTYPES.get(t.dataType, str(t.dataType)), shape=list(t.shape))
    meta = {k: json.loads(v) for k, v in mlmodel.user_defined_metadata.items() if not k.startswith('com.')}
    return dict(inputs=inputs, outputs=outputs, meta=meta, program_types=program_types(spec))


def program_ops(spec) -> Dict[Tuple[str, str], int]:
    """How many outputs of each (op type, element type) the saved MIL program has, e.g.
    ``('conv', 'FLOAT16'): 178, ('topk', 'INT32'): 7``."""
    from coremltools.proto import MIL_pb2
    counts: Dict[Tuple[str, str], int] = {}

    def visit(block):
        for op in block.operations:
            for out in op.outputs:
                if out.type.WhichOneof('type') == 'tensorType':
                    key = (op.type, MIL_pb2.DataType.Name(out.type.tensorType.dataType))
                    counts[key] = counts.get(key, 0) + 1
            for inner in op.blocks:
                visit(inner)

    for function in spec.mlProgram.functions.values():
        for block in function.block_specializations.values():
            visit(block)
    return counts


def program_types(spec) -> Dict[str, int]:
    """How many variables of the program have each element type (``{'FLOAT16': 812, ...}``)."""
    counts: Dict[str, int] = {}
    for (_, dtype), n in program_ops(spec).items():
        counts[dtype] = counts.get(dtype, 0) + n
    return counts


def check_package(path: str, meta: Optional[Dict[str, object]] = None) -> List[str]:
    """What is wrong with a saved package (empty when nothing): an image input that is not RGB
    or not the export size; outputs that are not the metadata's, in name or dtype; int64 /
    16-bit integer variables in the program (Core ML has no int64; 16-bit indices overflow)."""
    summary = package_summary(path)
    problems = []
    narrow = {k: v for k, v in summary['program_types'].items() if k in ('INT16', 'UINT16', 'INT64', 'UINT64')}
    if narrow:
        problems.append(f'integer types that overflow or are unsupported in the program: {narrow}')
    if not meta:
        return problems
    image = summary['inputs'].get('image')
    if image is None or image['type'] != 'image' or image['color_space'] != 'RGB':
        problems.append(f'input is not an RGB image: {summary["inputs"]}')
    elif [image['height'], image['width']] != list(meta['input_size']):
        problems.append(f'image input {image["height"]}x{image["width"]}, metadata says {meta["input_size"]}')
    if list(summary['outputs']) != list(meta['outputs']):
        problems.append(f'outputs {list(summary["outputs"])}, metadata says {meta["outputs"]}')
    for name, dtype in (meta.get('output_dtypes') or {}).items():
        if summary['outputs'].get(name, {}).get('dtype') != dtype:
            problems.append(f'output {name} is {summary["outputs"].get(name)}, metadata says {dtype}')
    return problems
