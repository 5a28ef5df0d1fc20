#!/usr/bin/env python
"""Run an end-to-end export (``.onnx`` or ``.pte``) on images, the way an app does.

This module is the reference to port to a phone, and the runner that ``tools/run_exported.py``
and the main job use. It imports only the standard library, numpy and Pillow at module level
and nothing of this package, so an app developer can copy this one file; the runtime is
imported when a model is loaded: onnxruntime for ``.onnx``, ExecuTorch for ``.pte``.

    python tools/run_exported.py work_dirs/export/retinanet_800x1344.onnx photo.jpg --out preds
    python tools/run_exported.py work_dirs/export/fpn_512x512.pte a.jpg b.png --threads 2

What an app does, step by step (each step is one function here):

1. Read the metadata (:func:`read_metadata`): ONNX ``metadata_props`` (each value
   JSON-encoded), or ``<name>.json`` beside a ``.pte``. It gives the task, the class names,
   the input size [H, W], mean / std (normalisation is inside the graph; the mean is only
   needed for the padding colour), the score threshold and the output names in order.
2. Letterbox the image (:func:`letterbox`): scale = min(H / h, W / w), resize bilinearly to
   (round(h * scale), round(w * scale)), place at the top-left of an H x W canvas filled with
   the mean colour rounded to uint8 (which normalises to about 0, as mmdet / mmseg pad after
   normalising). No resize when the size is unchanged.
3. Feed uint8 [1, H, W, 3] RGB (NHWC) as input ``image``.
4. Map the outputs back (:func:`predict`): detection ``boxes`` [K, 4] (x1, y1, x2, y2 in input
   pixels) divided by the scale (per axis: resized extent / original extent) and clipped to
   the original image, keeping rows with label >= 0 and score >= the threshold (rows past the
   detections have score 0, label -1); ``masks`` [K, H, W] (Mask R-CNN) and ``seg_map``
   [1, H, W] cropped to the resized region and resized to the original size by nearest
   neighbour (pixel centres).

ExecuTorch: on a phone the C++ runtime (``Module::forward`` with ``TensorPtr``s over your own
buffers) takes raw memory and needs nothing else. The Python binding in the ``executorch``
pip wheel, however, only accepts torch tensors (``forward`` refuses numpy arrays), so the
``.pte`` loader below imports torch lazily, only to wrap the numpy input
(``torch.from_numpy``, no copy) and to turn the outputs back into numpy. Nothing else here
uses torch, and ``.onnx`` models run without it.

Padding colour: the metadata's mean is in the order of the network's channels, which is RGB
for every config of this project (``bgr_to_rgb=True``).
"""
from __future__ import annotations

import argparse
import colorsys
import json
import os
import sys
import tempfile
import time
import uuid
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np
from PIL import Image, ImageDraw, ImageFont, ImageOps

MODEL_SUFFIXES = ('.onnx', '.pte')
#: opacity of masks and segmentation colours over the image
ALPHA = 0.5


class RunnerError(Exception):
    """A problem the user can fix (missing file, wrong kind of file, no metadata); the
    message names it and the fix. ``main`` prints it and exits with status 2."""


# ---------------------------------------------------------------------------- metadata
def metadata_json_path(path: str) -> str:
    """``<name>.json`` beside a ``.pte`` (ExecuTorch files carry no metadata of their own)."""
    return os.path.splitext(path)[0] + '.json'


def decode_value(value: str):
    try:
        return json.loads(value)
    except (TypeError, ValueError):
        return value


REQUIRED_KEYS = ('task', 'classes', 'input_size', 'mean', 'outputs')
REEXPORT = 'export it end to end: python tools/export.py CONFIG --size H W --formats onnx executorch (without --raw)'


#: the outputs each task's export has, in order
TASK_OUTPUTS = {'detection': (['boxes', 'scores', 'labels'], ['boxes', 'scores', 'labels', 'masks']),
                'segmentation': (['seg_map'],)}


def _is_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and value == value


def metadata_problems(meta: Dict[str, object]) -> List[str]:
    """What in an end-to-end export's metadata is malformed or contradicts itself, one line
    each (empty when it is sound): the input size, mean and std, score threshold, classes and
    their count, the task's outputs."""
    problems = []
    size = meta.get('input_size')
    if not (isinstance(size, list) and len(size) == 2 and all(isinstance(v, int) and v > 0 for v in size)):
        problems.append(f'input_size is {size!r}, not [H, W] in pixels')
    for key in ('mean', 'std'):
        value = meta.get(key, [1.0, 1.0, 1.0] if key == 'std' else None)
        if not (isinstance(value, list) and len(value) == 3 and all(_is_number(v) for v in value)):
            problems.append(f'{key} is {value!r}, not 3 numbers (one per RGB channel)')
        elif key == 'std' and min(value) <= 0:
            problems.append(f'std is {value!r}: every value must be positive')
    threshold = meta.get('score_threshold')
    if threshold is not None and not (_is_number(threshold) and 0 <= threshold <= 1):
        problems.append(f'score_threshold is {threshold!r}, not a number between 0 and 1 (or null)')
    classes = meta.get('classes')
    if not (isinstance(classes, list) and classes and all(isinstance(c, str) and c.strip() for c in classes)):
        problems.append('classes is not a list of class names')
    elif meta.get('num_classes') is not None and meta['num_classes'] != len(classes):
        problems.append(f'classes lists {len(classes)} names but the model has {meta["num_classes"]} classes '
                        '(num_classes): the list was edited or belongs to another model')
    outputs = meta.get('outputs')
    if meta.get('task') in TASK_OUTPUTS and outputs not in TASK_OUTPUTS[meta['task']]:
        problems.append(f'outputs are {outputs!r}; a {meta["task"]} export has '
                        + ' or '.join(repr(o) for o in TASK_OUTPUTS[meta['task']]))
    return problems


def _check_metadata(path: str, meta: Dict[str, object], where: str) -> Dict[str, object]:
    missing = [k for k in REQUIRED_KEYS if k not in meta]
    if missing:
        raise RunnerError(f'{path}: no end-to-end metadata ({where} lacks {", ".join(missing)}); it is a --raw '
                          f'export or not an edgeformers one; {REEXPORT}')
    if meta['task'] not in TASK_OUTPUTS:
        raise RunnerError(f'{path}: unknown task {meta["task"]!r} in its metadata (expected detection or '
                          'segmentation); update the runner or re-export')
    layout, dtype = meta.get('input_layout', 'NHWC'), meta.get('input_dtype', 'uint8')
    if (layout, dtype) != ('NHWC', 'uint8'):
        raise RunnerError(f'{path}: input {layout} {dtype}, this runner feeds NHWC uint8 images; {REEXPORT}')
    problems = metadata_problems(meta)
    if problems:
        raise RunnerError('\n'.join(f'{path}: metadata ({where}): {p}' for p in problems))
    return meta


def check_model_against_metadata(path: str, meta: Dict[str, object], input_shape: Sequence,
                                 num_outputs: int) -> None:
    """Raise a :class:`RunnerError` where the metadata contradicts the model itself: its
    input shape ``[1, H, W, 3]`` and its number of outputs."""
    problems = []
    h, w = meta['input_size']
    if list(input_shape) != [1, h, w, 3]:
        problems.append(f'input_size {[h, w]} says the input is [1, {h}, {w}, 3], the model takes '
                        f'{list(input_shape)}')
    if num_outputs != len(meta['outputs']):
        problems.append(f'the metadata names {len(meta["outputs"])} outputs {meta["outputs"]}, the model has '
                        f'{num_outputs}')
    if problems:
        raise RunnerError('\n'.join(f'{path}: the metadata belongs to another export: {p}' for p in problems))


def read_metadata(path: str, session=None) -> Dict[str, object]:
    """The metadata of an end-to-end export: ONNX ``metadata_props`` (through onnxruntime's
    ``custom_metadata_map`` of ``session``, or a fresh session), or the JSON beside a ``.pte``."""
    if path.endswith('.onnx'):
        if session is None:
            session = onnx_session(path, None)
        meta = {k: decode_value(v) for k, v in session.get_modelmeta().custom_metadata_map.items()}
        return _check_metadata(path, meta, 'its metadata_props')
    json_path = metadata_json_path(path)
    if not os.path.isfile(json_path):
        raise RunnerError(f'{json_path} not found: {path} carries no metadata of its own and this JSON beside it is '
                          f'missing (a --raw export, or the JSON was not copied along); keep the .json beside the '
                          f'.pte, or {REEXPORT}')
    try:
        with open(json_path) as f:
            meta = json.load(f)
    except (OSError, ValueError) as err:
        raise RunnerError(f'{json_path}: cannot read the metadata ({err}); {REEXPORT}') from None
    if not isinstance(meta, dict):
        raise RunnerError(f'{json_path}: not a metadata object; {REEXPORT}')
    return _check_metadata(path, meta, os.path.basename(json_path))


# ---------------------------------------------------------------------------- runtimes
def onnx_session(path: str, threads: Optional[int], profile_prefix: Optional[str] = None):
    """An onnxruntime CPU session of ``path``: ``threads`` intra-op threads (default: the
    runtime's); with ``profile_prefix``, onnxruntime's profiler writes its trace there."""
    try:
        import onnxruntime as ort
    except ImportError:
        raise RunnerError(f'{path}: running .onnx needs onnxruntime: pip install onnxruntime') from None
    options = ort.SessionOptions()
    if threads:
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
    if profile_prefix:
        options.enable_profiling = True
        options.profile_file_prefix = profile_prefix
    try:
        return ort.InferenceSession(path, options, providers=['CPUExecutionProvider'])
    except Exception as err:  # noqa: BLE001  (onnxruntime raises its own exception types)
        raise RunnerError(f'{path}: onnxruntime cannot load it ({str(err).strip().splitlines()[0]}); '
                          'is it a complete .onnx file?') from None


class ExportedModel:
    """A loaded end-to-end export. ``model(batch)`` takes uint8 ``[1, H, W, 3]`` RGB and
    returns ``{output name: numpy array}`` in the metadata's output order."""

    def __init__(self, path: str, meta: Dict[str, object], run) -> None:
        self.path = path
        self.meta = meta
        self.input_size: Tuple[int, int] = (int(meta['input_size'][0]), int(meta['input_size'][1]))
        self.task: str = meta['task']
        self.output_names: List[str] = list(meta['outputs'])
        self._run = run

    def __call__(self, batch: np.ndarray) -> Dict[str, np.ndarray]:
        h, w = self.input_size
        if not isinstance(batch, np.ndarray) or batch.dtype != np.uint8 or batch.shape != (1, h, w, 3):
            raise ValueError(f'{self.path} takes a uint8 array of shape (1, {h}, {w}, 3), got '
                             f'{getattr(batch, "dtype", type(batch).__name__)} {getattr(batch, "shape", "")}')
        outputs = list(self._run(np.ascontiguousarray(batch)))
        if len(outputs) != len(self.output_names):
            raise RuntimeError(f'{self.path} returned {len(outputs)} outputs, its metadata names '
                               f'{self.output_names}; the metadata belongs to another export')
        return dict(zip(self.output_names, outputs))

    def __repr__(self) -> str:
        return f'ExportedModel({self.path!r}, task={self.task!r}, input_size={self.input_size})'


def _load_onnx(path: str, threads: Optional[int]) -> ExportedModel:
    session = onnx_session(path, threads)
    meta = read_metadata(path, session)
    have = [o.name for o in session.get_outputs()]
    missing = [n for n in meta['outputs'] if n not in have]
    if missing:
        raise RunnerError(f'{path}: the metadata names outputs {missing} the graph does not have ({have}); {REEXPORT}')
    model_input = session.get_inputs()[0]
    check_model_against_metadata(path, meta, model_input.shape, len(have))
    names = list(meta['outputs'])
    return ExportedModel(path, meta, lambda batch: session.run(names, {model_input.name: batch}))


def _load_pte(path: str, threads: Optional[int]) -> ExportedModel:
    meta = read_metadata(path)
    try:
        # The pip wheel's binding is torch-based (see the module docstring): torch only wraps arrays.
        import torch
        from executorch.extension.pybindings import portable_lib
    except ImportError:
        raise RunnerError(f'{path}: running .pte in Python needs the executorch pip package (and torch): '
                          'pip install executorch') from None
    if threads and hasattr(portable_lib, '_unsafe_reset_threadpool'):
        portable_lib._unsafe_reset_threadpool(threads)
    try:
        program = portable_lib._load_for_executorch(path)
    except Exception as err:  # noqa: BLE001
        raise RunnerError(f'{path}: ExecuTorch cannot load it ({str(err).strip().splitlines()[0]}); '
                          'is it a complete .pte file?') from None
    method = program.method_meta('forward')
    check_model_against_metadata(path, meta, method.input_tensor_meta(0).sizes(), method.num_outputs())

    def run(batch: np.ndarray) -> List[np.ndarray]:
        # standard strides (image[None] gives the batch axis a 0 stride, which torch.export rejects; be safe)
        return [o.numpy() for o in program.forward((torch.from_numpy(np.array(batch, order='C')),))]

    return ExportedModel(path, meta, run)


def load_model(path: str, threads: Optional[int] = None) -> ExportedModel:
    """Load a ``.onnx`` (onnxruntime) or ``.pte`` (ExecuTorch) end-to-end export with its
    metadata; ``threads`` sets the runtime's thread count where it allows it."""
    path = os.fspath(path)
    if not os.path.exists(path):
        raise RunnerError(f'{path}: no such file; pass a .onnx or .pte made by tools/export.py')
    if not path.endswith(MODEL_SUFFIXES):
        raise RunnerError(f'{path}: unknown kind of model (expected {" or ".join(MODEL_SUFFIXES)}); '
                          'Core ML and TFLite exports run in their own runtimes')
    if not os.path.isfile(path):
        raise RunnerError(f'{path}: not a file; pass a .onnx or .pte made by tools/export.py')
    return _load_onnx(path, threads) if path.endswith('.onnx') else _load_pte(path, threads)


# ---------------------------------------------------------------------------- images
def load_image(path: str) -> np.ndarray:
    """An image file as uint8 H x W x 3 RGB, read as the training pipeline (OpenCV) reads it:
    EXIF orientation applied, alpha ignored, grey repeated over the channels. 16-bit images
    are scaled to 8 bits (value / 257), not clipped; floating-point images are refused (their
    range is not known)."""
    try:
        with Image.open(path) as img:
            img = ImageOps.exif_transpose(img)
            if img.mode in ('F', 'I;16F'):
                raise RunnerError(f'{path}: a floating-point image ({img.mode}), whose range this runner cannot '
                                  'know; save it as an 8-bit (or 16-bit) PNG or JPEG')
            if img.mode.startswith('I'):  # 16-bit grey ('I;16', 'I;16B'), or 32-bit integers ('I')
                values = np.asarray(img).astype(np.int64)
                if values.size and (values.min() < 0 or values.max() > 65535):
                    raise RunnerError(f'{path}: a 32-bit integer image with values {values.min()}..{values.max()}, '
                                      'beyond 16 bits; save it as an 8-bit or 16-bit image')
                grey = ((values + 128) // 257).astype(np.uint8)
                return np.repeat(grey[..., None], 3, axis=2)
            return np.asarray(img.convert('RGB')).copy()
    except FileNotFoundError:
        raise RunnerError(f'{path}: no such image file') from None
    except (OSError, ValueError, Image.DecompressionBombError) as err:
        raise RunnerError(f'{path}: Pillow cannot read it as an image ({err}); pass a JPEG, PNG, BMP or WebP '
                          'file') from None


def fitted_size(h: int, w: int, size: Sequence[int]) -> Tuple[int, int, float]:
    """(new_h, new_w, scale): an h x w image scaled by min(H / h, W / w) to fit ``size``."""
    scale = min(size[0] / h, size[1] / w)
    new_h = min(max(int(h * scale + 0.5), 1), size[0])
    new_w = min(max(int(w * scale + 0.5), 1), size[1])
    return new_h, new_w, scale


def letterbox(image: np.ndarray, size: Sequence[int], pad_value) -> Tuple[np.ndarray, float]:
    """Fit ``image`` (uint8 H x W x 3) into ``size`` (H, W) keeping its aspect ratio: resized
    bilinearly (unchanged when it already fits at scale 1), at the top-left, padded right
    and bottom with ``pad_value`` (a colour, or one value). Returns (canvas, scale)."""
    h, w = image.shape[:2]
    new_h, new_w, scale = fitted_size(h, w, size)
    if (new_h, new_w) != (h, w):
        # Pillow's bilinear filter widens its support when shrinking (anti-aliased)
        image = np.asarray(Image.fromarray(image).resize((new_w, new_h), Image.BILINEAR))
    canvas = np.empty((size[0], size[1], 3), dtype=np.uint8)
    canvas[...] = np.asarray(pad_value, dtype=np.uint8)
    canvas[:new_h, :new_w] = image
    return canvas, scale


def pad_colour(meta: Dict[str, object]) -> np.ndarray:
    """The metadata mean rounded to uint8: padding that normalises to about 0."""
    return np.clip(np.rint(np.asarray(meta['mean'], dtype=np.float64)), 0, 255).astype(np.uint8)


def resize_nearest(array: np.ndarray, h: int, w: int) -> np.ndarray:
    """Nearest-neighbour resize of the last two axes to (h, w), sampling at pixel centres."""
    src_h, src_w = array.shape[-2:]
    rows = np.minimum(((np.arange(h) + 0.5) * (src_h / h)).astype(np.int64), src_h - 1)
    cols = np.minimum(((np.arange(w) + 0.5) * (src_w / w)).astype(np.int64), src_w - 1)
    return array[..., rows[:, None], cols[None, :]]


# ---------------------------------------------------------------------------- predict
def predict(model: ExportedModel, image: np.ndarray, score_thr: Optional[float] = None) -> Dict[str, object]:
    """Run ``model`` on one uint8 H x W x 3 RGB image of any size; results in its pixels.

    Detection: ``boxes`` [n, 4] float32 (x1, y1, x2, y2), ``scores`` [n] float32, ``labels``
    [n] int64, ``classes`` [n names], plus ``masks`` [n, h, w] uint8 when the model has them.
    Segmentation: ``seg_map`` [h, w] uint8. ``score_thr`` defaults to the metadata's."""
    image = np.asarray(image)
    if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(f'predict takes a uint8 H x W x 3 RGB image, got {image.dtype} {image.shape}')
    h, w = image.shape[:2]
    canvas, _ = letterbox(image, model.input_size, pad_colour(model.meta))
    new_h, new_w, _ = fitted_size(h, w, model.input_size)
    out = model(canvas[None])
    if model.task == 'segmentation':
        seg = np.asarray(out['seg_map'])[0, :new_h, :new_w]
        if seg.size and int(seg.max()) >= len(model.meta['classes']):
            raise RunnerError(f'{model.path}: the model returns class {int(seg.max())}, beyond the '
                              f'{len(model.meta["classes"])} classes of its metadata: the metadata belongs to '
                              'another export')
        return {'seg_map': np.ascontiguousarray(resize_nearest(seg, h, w).astype(np.uint8))}
    thr = model.meta.get('score_threshold') if score_thr is None else score_thr
    scores = np.asarray(out['scores'], dtype=np.float32)
    labels = np.asarray(out['labels']).astype(np.int64)
    keep = labels >= 0
    if thr is not None:
        keep &= scores >= thr
    boxes = np.asarray(out['boxes'], dtype=np.float32)[keep].copy()
    # per axis: the resized extent over the original (equal to the scale up to rounding)
    boxes /= np.array([new_w / w, new_h / h, new_w / w, new_h / h], dtype=np.float32)
    boxes[:, 0::2] = np.clip(boxes[:, 0::2], 0, w)
    boxes[:, 1::2] = np.clip(boxes[:, 1::2], 0, h)
    classes = list(model.meta['classes'])
    beyond = sorted({int(i) for i in labels[keep] if i >= len(classes)})
    if beyond:
        raise RunnerError(f'{model.path}: the model returns label {beyond[0]}, beyond the {len(classes)} classes of '
                          'its metadata: the metadata belongs to another export')
    result = {'boxes': boxes, 'scores': scores[keep], 'labels': labels[keep],
              'classes': [classes[i] for i in labels[keep]]}
    if 'masks' in out:
        masks = np.asarray(out['masks'])[keep][:, :new_h, :new_w]
        result['masks'] = np.ascontiguousarray(resize_nearest(masks, h, w).astype(np.uint8))
    return result


def summary(result: Dict[str, object], meta: Dict[str, object]) -> Dict[str, object]:
    """The JSON-friendly part of a :func:`predict` result."""
    if 'seg_map' in result:
        seg = result['seg_map']
        counts = np.bincount(seg.ravel(), minlength=256)
        classes = list(meta['classes'])
        shares = {(classes[i].strip() if i < len(classes) else str(i)): round(float(counts[i]) / seg.size, 4)
                  for i in np.argsort(-counts, kind='stable') if counts[i]}
        return {'segmentation': shares}
    return {'detections': [{'box': [round(float(v), 2) for v in box], 'score': round(float(score), 4),
                            'label': int(label), 'class': name}
                           for box, score, label, name in zip(result['boxes'], result['scores'], result['labels'],
                                                              result['classes'])]}


# ---------------------------------------------------------------------------- drawing
def palette(n: int = 256) -> np.ndarray:
    """A fixed palette: hues a golden-ratio step apart, alternating brightness."""
    colours = [colorsys.hsv_to_rgb((i * 0.618033988749895) % 1.0, 0.65 + 0.35 * (i % 2), 0.95 - 0.25 * (i % 3 == 2))
               for i in range(n)]
    return (np.array(colours) * 255).round().astype(np.uint8)


PALETTE = palette()


def _font(size: int):
    try:
        return ImageFont.load_default(size=size)
    except TypeError:  # Pillow < 10.1: one bitmap size
        return ImageFont.load_default()


def draw(image: np.ndarray, result: Dict[str, object], meta: Dict[str, object]) -> Image.Image:
    """``image`` with the :func:`predict` result drawn on it: translucent masks, boxes with
    class name and score; or the segmentation map blended in a fixed palette with a legend."""
    image = np.asarray(image, dtype=np.uint8)
    h, w = image.shape[:2]
    font = _font(max(10, min(h, w) // 40))
    if 'seg_map' in result:
        seg = result['seg_map']
        blended = (image * (1 - ALPHA) + PALETTE[seg] * ALPHA).round().astype(np.uint8)
        canvas = Image.fromarray(blended)
        pen = ImageDraw.Draw(canvas)
        counts = np.bincount(seg.ravel(), minlength=256)
        classes = list(meta['classes'])
        y = 2
        for i in np.argsort(-counts, kind='stable')[:8]:
            if not counts[i]:
                break
            name = classes[i].strip() if i < len(classes) else str(i)
            text = f'{name} {counts[i] / seg.size:.0%}'
            x0, y0, x1, y1 = pen.textbbox((14, y), text, font=font)
            pen.rectangle((2, y, x1 + 2, y1 + 1), fill=(0, 0, 0))
            pen.rectangle((3, y + 1, 11, y1), fill=tuple(int(c) for c in PALETTE[i]))
            pen.text((14, y), text, fill=(255, 255, 255), font=font)
            y = y1 + 3
        return canvas
    out = image.astype(np.float32)
    for mask, label in zip(result.get('masks', []), result['labels']):
        on = mask.astype(bool)
        out[on] = out[on] * (1 - ALPHA) + PALETTE[label % 256] * ALPHA
    canvas = Image.fromarray(out.round().astype(np.uint8))
    pen = ImageDraw.Draw(canvas)
    # lowest scores first so that the best detections are drawn on top
    for i in np.argsort(result['scores'], kind='stable'):
        colour = tuple(int(c) for c in PALETTE[int(result['labels'][i]) % 256])
        x1, y1, x2, y2 = (float(v) for v in result['boxes'][i])
        pen.rectangle((x1, y1, max(x1, x2), max(y1, y2)), outline=colour, width=2)
        text = f'{result["classes"][i]} {float(result["scores"][i]):.2f}'
        tx0, ty0, tx1, ty1 = pen.textbbox((x1, y1), text, font=font)
        dy = ty1 - ty0 + 2
        ty = y1 - dy if y1 - dy >= 0 else y1
        pen.rectangle((tx0, ty, tx1 + 2, ty + dy), fill=colour)
        pen.text((x1 + 1, ty - (ty0 - y1)), text, fill=(0, 0, 0), font=font)
    return canvas


def save_png(canvas: Image.Image, path: str) -> None:
    """Write a PNG atomically: a temporary name in the same folder, then os.replace."""
    folder, name = os.path.split(os.path.abspath(path))
    tmp = os.path.join(folder, f'.{name}.tmp-{uuid.uuid4().hex[:12]}.png')
    try:
        canvas.save(tmp, format='PNG')
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise


# ---------------------------------------------------------------------------- command line
def writable_folder_problem(path: str) -> Optional[str]:
    """None when ``path`` is (or can be made) a folder this process can write; else why not."""
    try:
        os.makedirs(path, exist_ok=True)
        with tempfile.TemporaryFile(dir=path):
            pass
    except OSError as err:
        existing = os.path.abspath(path)
        while not os.path.exists(existing) and os.path.dirname(existing) != existing:
            existing = os.path.dirname(existing)
        if not os.path.isdir(existing):
            return f'{existing} is a file, not a folder'
        return f'{err.strerror}: {err.filename}' if err.strerror and err.filename else str(err)
    return None


def _png_name(image_path: str, used: set) -> str:
    stem = os.path.splitext(os.path.basename(image_path))[0] or 'image'
    name, n = f'{stem}_pred.png', 2
    while name in used:
        name, n = f'{stem}_pred_{n}.png', n + 1
    used.add(name)
    return name


def positive_int(text: str) -> int:
    """argparse type: an integer of 1 or more."""
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f'{text}: must be at least 1')
    return value


def _threshold(text: str) -> float:
    value = float(text)
    if not 0 <= value <= 1:
        raise argparse.ArgumentTypeError(f'{text}: a score threshold is between 0 and 1')
    return value


def _error(err: Exception) -> None:
    for line in str(err).splitlines():
        print(f'error: {line}', file=sys.stderr)


def main(argv=None) -> int:
    """The command line: exit status 0, 2 for input it refuses (each problem one line on
    stderr), 1 for an unexpected failure (``--debug`` or ``EDGEFORMERS_DEBUG=1`` shows its
    traceback)."""
    paragraphs = __doc__.split('\n\n')
    parser = argparse.ArgumentParser(description=paragraphs[0] + '\n\n' + paragraphs[2],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('model', help='an end-to-end export: .onnx, or .pte with its .json beside it')
    parser.add_argument('images', nargs='+', metavar='IMAGE', help='image files of any size (JPEG, PNG, ...)')
    parser.add_argument('--out', metavar='DIR', help='write annotated PNGs here (default: none, JSON only)')
    parser.add_argument('--threads', type=positive_int, help='runtime threads (default: the runtime\'s)')
    parser.add_argument('--score-thr', type=_threshold, metavar='T',
                        help='keep detections scoring at least T (default: the metadata\'s score_threshold)')
    parser.add_argument('--debug', action='store_true', help='on an error, show its traceback (also EDGEFORMERS_DEBUG=1)')
    args = parser.parse_args(argv)
    try:
        return _run(args)
    except RunnerError as err:
        _error(err)
        return 2
    except Exception as err:  # noqa: BLE001  (one line unless --debug)
        if args.debug or os.environ.get('EDGEFORMERS_DEBUG', '') not in ('', '0'):
            raise
        print(f'error: {type(err).__name__}: {" ".join(str(err).split())} (an unexpected failure; --debug shows the '
              'traceback)', file=sys.stderr)
        return 1


def _run(args) -> int:
    if args.out:
        problem = writable_folder_problem(args.out)
        if problem:
            raise RunnerError(f'--out {args.out}: cannot write there ({problem}); choose a folder you can write')
    model = load_model(args.model, args.threads)
    status, used = 0, set()
    for image_path in args.images:
        try:
            image = load_image(image_path)
        except RunnerError as err:
            _error(err)
            status = 2
            continue
        start = time.perf_counter()
        result = predict(model, image, args.score_thr)
        record = {'path': image_path, 'size': [int(image.shape[0]), int(image.shape[1])],
                  'seconds': round(time.perf_counter() - start, 4)}
        record.update(summary(result, model.meta))
        record['png'] = None
        if args.out:
            png = os.path.join(args.out, _png_name(image_path, used))
            try:
                save_png(draw(image, result, model.meta), png)
                record['png'] = png
            except OSError as err:
                print(f'error: {png}: cannot write the PNG ({err.strerror or err}); check the space and permissions '
                      f'of --out', file=sys.stderr)
                status = 2
        print(json.dumps(record), flush=True)
    return status


if __name__ == '__main__':
    sys.exit(main())
