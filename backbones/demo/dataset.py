"""A small built-in dataset in the layouts of COCO and ADE20K, generated deterministically.

Scenes of textured wall and floor with several objects of five shape classes, each shape
with its own colour family, varied in size, rotation, colour and texture, overlapping and
occluding each other. The same scenes are written twice:

* ``coco/``: ``train2017/``, ``val2017/`` and ``annotations/instances_{train,val}2017.json``
  with instance boxes and RLE masks of the visible parts, under real COCO category names and
  ids, so mmdet's ``CocoDataset`` and ``CocoMetric`` read it unchanged;
* ``ade/ADEChallengeData2016/``: ``images/{training,validation}`` and
  ``annotations/{training,validation}`` label PNGs in ADE20K's 150-class numbering (0 is
  "other", ignored with ``reduce_zero_label``), so mmseg's ``ADE20KDataset`` reads it;
* ``imagenet/``: every visible object cropped square around its box, in ImageNet's folder
  layout (``train/<class>/*.jpg``, ``val/<class>/*.jpg``, ``meta/{train,val}.txt`` listing
  ``<class>/<file> <label>``), one folder per shape class, so mmpretrain's ``ImageNet`` and
  ``CustomDataset`` read it as a five-class classification set.

So the downstream and the classification configs run on it by changing ``data_root`` (and the
image size and, for classification, the number of classes).
"""
from __future__ import annotations

import json
import math
import os
import shutil
import tempfile
from dataclasses import dataclass
from typing import Dict, List, Tuple

import cv2
import numpy as np

# shape -> (COCO category name, COCO id, ADE20K class name, hue centre in degrees)
CLASSES: Dict[str, Tuple[str, int, str, float]] = {
    'circle': ('sports ball', 37, 'ball', 0.0),
    'triangle': ('kite', 38, 'tent', 60.0),
    'square': ('tv', 72, 'box', 120.0),
    'ring': ('donut', 60, 'plate', 200.0),
    'cross': ('airplane', 5, 'flag', 280.0),
}
SHAPES = list(CLASSES)
# COCO's category ids, in the order of mmdet's 80 class names
COCO_IDS = (1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 13, 14, 15, 16, 17, 18, 19, 20, 21, 22, 23, 24, 25, 27, 28, 31,
            32, 33, 34, 35, 36, 37, 38, 39, 40, 41, 42, 43, 44, 46, 47, 48, 49, 50, 51, 52, 53, 54, 55, 56, 57,
            58, 59, 60, 61, 62, 63, 64, 65, 67, 70, 72, 73, 74, 75, 76, 77, 78, 79, 80, 81, 82, 84, 85, 86, 87,
            88, 89, 90)
BACKGROUND = ('wall', 'floor')  # ADE20K stuff classes of the two background regions


def _ade_index(name: str) -> int:
    from mmseg.datasets import ADE20KDataset
    return ADE20KDataset.METAINFO['classes'].index(name)


@dataclass
class Split:
    name: str        # 'train' or 'val'
    num_images: int
    seed: int


def _texture(rng: np.random.Generator, h: int, w: int, base_rgb: np.ndarray, kind: int) -> np.ndarray:
    """A colour texture: smooth noise, stripes or a checker pattern around ``base_rgb``."""
    low = rng.normal(0, 1, (max(2, h // 16), max(2, w // 16), 1)).astype(np.float32)
    noise = cv2.resize(low, (w, h), interpolation=cv2.INTER_CUBIC)[..., None] * 18
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    if kind == 0:
        pattern = 0
    elif kind == 1:
        period = rng.uniform(6, 18)
        angle = rng.uniform(0, math.pi)
        pattern = 14 * np.sin((xx * math.cos(angle) + yy * math.sin(angle)) * 2 * math.pi / period)
    else:
        cell = int(rng.integers(8, 24))
        pattern = 12 * (((yy // cell) + (xx // cell)) % 2 * 2 - 1)
    img = base_rgb[None, None, :] + noise + np.asarray(pattern, np.float32)[..., None] if np.ndim(pattern) else \
        base_rgb[None, None, :] + noise
    return img + rng.normal(0, 4, (h, w, 3))


def _hsv_to_rgb(h_deg: float, s: float, v: float) -> np.ndarray:
    hsv = np.array([[[h_deg / 2, s * 255, v * 255]]], np.uint8)  # OpenCV hue is 0..180
    return cv2.cvtColor(hsv, cv2.COLOR_HSV2RGB)[0, 0].astype(np.float32)


def _shape_mask(shape: str, h: int, w: int, cx: float, cy: float, size: float, angle: float) -> np.ndarray:
    mask = np.zeros((h, w), np.uint8)
    r = size / 2

    def rotated(points: np.ndarray) -> np.ndarray:
        c, s = math.cos(angle), math.sin(angle)
        rot = points @ np.array([[c, s], [-s, c]], np.float32)
        return np.round(rot + [cx, cy]).astype(np.int32)

    if shape == 'circle':
        cv2.circle(mask, (int(round(cx)), int(round(cy))), int(round(r)), 1, -1)
    elif shape == 'ring':
        cv2.circle(mask, (int(round(cx)), int(round(cy))), int(round(r)), 1, -1)
        cv2.circle(mask, (int(round(cx)), int(round(cy))), int(round(r * 0.5)), 0, -1)
    elif shape == 'square':
        pts = np.array([[-r, -r], [r, -r], [r, r], [-r, r]], np.float32) * 0.85
        cv2.fillPoly(mask, [rotated(pts)], 1)
    elif shape == 'triangle':
        pts = np.array([[0, -r], [r * 0.95, r * 0.7], [-r * 0.95, r * 0.7]], np.float32)
        cv2.fillPoly(mask, [rotated(pts)], 1)
    elif shape == 'cross':
        t = r * 0.33
        pts = np.array([[-t, -r], [t, -r], [t, -t], [r, -t], [r, t], [t, t], [t, r], [-t, r], [-t, t],
                        [-r, t], [-r, -t], [-t, -t]], np.float32)
        cv2.fillPoly(mask, [rotated(pts)], 1)
    else:
        raise ValueError(f'unknown shape {shape!r}')
    return mask.astype(bool)


def render_scene(rng: np.random.Generator, height: int, width: int, max_objects: int = 6):
    """One scene: (RGB uint8 image, ADE label map, list of (shape, visible mask))."""
    horizon = int(height * rng.uniform(0.3, 0.7))
    wall = _texture(rng, height, width, _hsv_to_rgb(rng.uniform(0, 360), rng.uniform(0.05, 0.3),
                                                    rng.uniform(0.55, 0.9)), int(rng.integers(0, 3)))
    floor = _texture(rng, height, width, _hsv_to_rgb(rng.uniform(0, 360), rng.uniform(0.1, 0.4),
                                                     rng.uniform(0.3, 0.6)), int(rng.integers(0, 3)))
    img = np.where((np.arange(height) < horizon)[:, None, None], wall, floor)
    labels = np.where(np.arange(height)[:, None] < horizon, 0, 1) * np.ones((1, width), np.int64)
    stuff = labels.copy()  # 0 wall, 1 floor; objects get 2 + class index

    objects: List[Tuple[str, np.ndarray]] = []
    owner = np.full((height, width), -1, np.int64)
    full_areas = []
    short = min(height, width)
    for k in range(int(rng.integers(2, max_objects + 1))):
        shape = SHAPES[int(rng.integers(0, len(SHAPES)))]
        size = rng.uniform(0.14, 0.42) * short
        cx, cy = rng.uniform(size * 0.3, width - size * 0.3), rng.uniform(size * 0.3, height - size * 0.3)
        mask = _shape_mask(shape, height, width, cx, cy, size, rng.uniform(0, 2 * math.pi))
        if mask.sum() < 30:
            continue
        hue = (CLASSES[shape][3] + rng.normal(0, 12)) % 360
        colour = _hsv_to_rgb(hue, rng.uniform(0.55, 1.0), rng.uniform(0.5, 1.0))
        obj = _texture(rng, height, width, colour, int(rng.integers(0, 3)) if rng.random() < 0.5 else 0)
        shade = np.clip(1 + 0.25 * (np.mgrid[0:height, 0:width][0] - cy) / max(size, 1), 0.7, 1.3)[..., None]
        img = np.where(mask[..., None], obj * shade, img)
        owner[mask] = len(objects)
        objects.append((shape, mask))
        full_areas.append(mask.sum())
        stuff[mask] = 2 + SHAPES.index(shape)
    visible = []
    for i, (shape, mask) in enumerate(objects):
        vis = owner == i
        if vis.sum() >= max(0.3 * full_areas[i], 40):  # drop instances that are mostly hidden
            visible.append((shape, vis))
    img = np.clip(img * rng.uniform(0.8, 1.2) + rng.normal(0, 3, img.shape), 0, 255).astype(np.uint8)
    return img, stuff, visible


def _rle(mask: np.ndarray) -> dict:
    from pycocotools import mask as mask_utils
    rle = mask_utils.encode(np.asfortranarray(mask.astype(np.uint8)))
    rle['counts'] = rle['counts'].decode('ascii')
    return rle


#: the folders a data root holds, each marked as written by :func:`make_dataset`
DATASET_DIRS = ('coco', 'ade', 'imagenet')
MARKER = '.edgeformers-synthetic'
RECORD = 'dataset.json'


def _check_request(num_train, num_val, size, seed, max_objects) -> None:
    def is_int(v):
        return isinstance(v, (int, np.integer)) and not isinstance(v, bool)
    if not is_int(seed) or seed < 0:
        raise ValueError(f'make_dataset: seed must be an integer >= 0, got {seed!r}')
    if not is_int(num_train) or num_train < 1 or not is_int(num_val) or num_val < 0:
        raise ValueError(f'make_dataset: num_train must be >= 1 and num_val >= 0, got {num_train!r} and {num_val!r}')
    if len(size) != 2 or not all(is_int(v) and v >= 32 for v in size):
        raise ValueError(f'make_dataset: size must be (height, width), each at least 32 pixels, got {tuple(size)}')
    if not is_int(max_objects) or max_objects < 2:
        raise ValueError(f'make_dataset: max_objects must be at least 2, got {max_objects!r}')


def _owned(root: str, has_record: bool) -> Dict[str, bool]:
    """For each dataset folder present under ``root``: whether make_dataset wrote it."""
    found = {}
    for name in DATASET_DIRS:
        path = os.path.join(root, name)
        if os.path.lexists(path):
            found[name] = os.path.isdir(path) and not os.path.islink(path) and (
                has_record or os.path.isfile(os.path.join(path, MARKER)))
    return found


def make_dataset(root: str, num_train: int = 200, num_val: int = 50, size: Tuple[int, int] = (256, 256),
                 seed: int = 0, max_objects: int = 6, overwrite: bool = False) -> Dict[str, str]:
    """Write the dataset under ``root``; returns the COCO and ADE20K ``data_root`` paths.

    Deterministic: the same arguments give the same files. A data root holds one dataset,
    recorded with its parameters in ``root/dataset.json``: the same request reuses it (unless
    ``overwrite``), another one rebuilds it. The new dataset is written to a temporary
    folder inside ``root`` and renamed into place; the record is written last, so an
    interrupted generation is never taken for a complete one. Only the folders the dataset
    writes (``coco/``, ``ade/``) are replaced; other files in ``root`` are left alone, and a
    ``coco/`` or ``ade/`` folder that make_dataset did not write is refused.
    """
    _check_request(num_train, num_val, size, seed, max_objects)
    height, width = int(size[0]), int(size[1])
    coco_root = os.path.join(root, 'coco')
    ade_root = os.path.join(root, 'ade', 'ADEChallengeData2016')
    record_path = os.path.join(root, RECORD)
    stamp = dict(num_train=int(num_train), num_val=int(num_val), size=[height, width], seed=int(seed),
                 max_objects=int(max_objects), version=3)
    record = None
    if os.path.isfile(record_path):
        try:
            with open(record_path) as f:
                record = json.load(f)
        except (OSError, ValueError):
            record = None
    imagenet_root = os.path.join(root, 'imagenet')
    if not overwrite and record == stamp and all(_owned(root, True).get(n) for n in DATASET_DIRS):
        return dict(coco=coco_root, ade=ade_root, imagenet=imagenet_root)
    owned = _owned(root, isinstance(record, dict) and record.get('version') is not None)
    foreign = [os.path.join(root, n) for n, mine in owned.items() if not mine]
    if foreign:
        raise FileExistsError(f'make_dataset: {", ".join(foreign)} exists and was not written by make_dataset; '
                              'the built-in dataset will not replace it. Choose an empty folder (or one made by '
                              'make_dataset) as the data root.')
    os.makedirs(root, exist_ok=True)
    for name in os.listdir(root):  # what an interrupted generation left
        if name.startswith('.make_dataset-') and os.path.isdir(os.path.join(root, name)):
            shutil.rmtree(os.path.join(root, name))
    tmp = tempfile.mkdtemp(prefix='.make_dataset-', dir=root)
    try:
        _write_dataset(os.path.join(tmp, 'coco'), os.path.join(tmp, 'ade', 'ADEChallengeData2016'),
                       os.path.join(tmp, 'imagenet'), num_train, num_val, height, width, seed, max_objects)
        for name in DATASET_DIRS:
            with open(os.path.join(tmp, name, MARKER), 'w') as f:
                f.write('written by backbones.demo.dataset.make_dataset; see ../dataset.json\n')
        # the old dataset's folders keep their ownership without the record...
        for name in owned:
            open(os.path.join(root, name, MARKER), 'a').close()
        # ...which goes first, so a half-swapped root is never taken for a complete dataset
        if os.path.lexists(record_path):
            os.remove(record_path)
        for name in DATASET_DIRS:
            if name in owned:
                shutil.rmtree(os.path.join(root, name))
            os.replace(os.path.join(tmp, name), os.path.join(root, name))
        with open(record_path + '.tmp', 'w') as f:
            json.dump(stamp, f)
        os.replace(record_path + '.tmp', record_path)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return dict(coco=coco_root, ade=ade_root, imagenet=imagenet_root)


def crop_object(img: np.ndarray, mask: np.ndarray, side: int) -> np.ndarray:
    """A square crop around a visible object (1.4 times its box's longer side, moved inside the
    image), resized to ``side`` x ``side``: the classification image of the object."""
    ys, xs = np.nonzero(mask)
    h, w = mask.shape
    extent = min(int(round(1.4 * max(xs.max() - xs.min() + 1, ys.max() - ys.min() + 1))), h, w)
    cx, cy = (xs.min() + xs.max() + 1) / 2, (ys.min() + ys.max() + 1) / 2
    x0 = int(min(max(round(cx - extent / 2), 0), w - extent))
    y0 = int(min(max(round(cy - extent / 2), 0), h - extent))
    crop = img[y0:y0 + extent, x0:x0 + extent]
    return cv2.resize(crop, (side, side), interpolation=cv2.INTER_AREA if extent > side else cv2.INTER_LINEAR)


def _write_dataset(coco_root: str, ade_root: str, imagenet_root: str, num_train: int, num_val: int, height: int,
                   width: int, seed: int, max_objects: int) -> None:
    ade_ids = [_ade_index(BACKGROUND[0]), _ade_index(BACKGROUND[1])] + [_ade_index(CLASSES[s][2]) for s in SHAPES]
    # All 80 COCO categories, so that mmdet's label indices are COCO's own (a dataset listing only
    # its five would have them renumbered 0..4) and a model trained here speaks COCO's labels.
    from mmdet.datasets import CocoDataset
    categories = [dict(id=i, name=n) for i, n in zip(COCO_IDS, CocoDataset.METAINFO['classes'])]
    assert all(dict(zip(COCO_IDS, CocoDataset.METAINFO['classes']))[CLASSES[s][1]] == CLASSES[s][0] for s in SHAPES)
    side = max(32, min(height, width) // 2)  # the classification images' side
    for shape in SHAPES:
        for split in ('train', 'val'):
            os.makedirs(os.path.join(imagenet_root, split, shape), exist_ok=True)
    os.makedirs(os.path.join(imagenet_root, 'meta'), exist_ok=True)
    for split in (Split('train', num_train, seed), Split('val', num_val, seed + 1_000_003)):
        coco_dir = os.path.join(coco_root, f'{split.name}2017')
        listing = []
        ade_split = 'training' if split.name == 'train' else 'validation'
        ade_img_dir = os.path.join(ade_root, 'images', ade_split)
        ade_ann_dir = os.path.join(ade_root, 'annotations', ade_split)
        for d in (coco_dir, ade_img_dir, ade_ann_dir, os.path.join(coco_root, 'annotations')):
            os.makedirs(d, exist_ok=True)
        images, annotations = [], []
        for i in range(split.num_images):
            rng = np.random.default_rng([split.seed, i])
            img, stuff, objects = render_scene(rng, height, width, max_objects)
            name = f'{split.name}_{i:06d}'
            bgr = cv2.cvtColor(img, cv2.COLOR_RGB2BGR)
            cv2.imwrite(os.path.join(coco_dir, name + '.jpg'), bgr, [cv2.IMWRITE_JPEG_QUALITY, 95])
            cv2.imwrite(os.path.join(ade_img_dir, name + '.jpg'), bgr, [cv2.IMWRITE_JPEG_QUALITY, 95])
            # ADE20K numbering: PNG value = class index + 1 (0 is "other")
            label = (np.asarray(ade_ids)[stuff] + 1).astype(np.uint8)
            cv2.imwrite(os.path.join(ade_ann_dir, name + '.png'), label)
            images.append(dict(id=i + 1, file_name=name + '.jpg', height=height, width=width))
            for k, (shape, mask) in enumerate(objects):
                crop_name = f'{shape}/{name}_{k}.jpg'
                cv2.imwrite(os.path.join(imagenet_root, split.name, crop_name),
                            cv2.cvtColor(crop_object(img, mask, side), cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, 95])
                listing.append(f'{crop_name} {SHAPES.index(shape)}')
                ys, xs = np.nonzero(mask)
                x0, y0, x1, y1 = xs.min(), ys.min(), xs.max() + 1, ys.max() + 1
                annotations.append(dict(
                    id=len(annotations) + 1, image_id=i + 1, category_id=CLASSES[shape][1],
                    bbox=[float(x0), float(y0), float(x1 - x0), float(y1 - y0)], area=float(mask.sum()),
                    iscrowd=0, segmentation=_rle(mask)))
        with open(os.path.join(imagenet_root, 'meta', f'{split.name}.txt'), 'w') as f:
            f.write(''.join(line + '\n' for line in listing))
        with open(os.path.join(coco_root, 'annotations', f'instances_{split.name}2017.json'), 'w') as f:
            json.dump(dict(images=images, annotations=annotations, categories=categories,
                           info=dict(description='edgeformers synthetic shapes', seed=seed)), f)


def class_names() -> Dict[str, List[str]]:
    """The COCO, ADE20K and classification (ImageNet layout) class names the dataset uses."""
    return dict(coco=[CLASSES[s][0] for s in SHAPES],
                ade=list(BACKGROUND) + [CLASSES[s][2] for s in SHAPES],
                imagenet=list(SHAPES))
