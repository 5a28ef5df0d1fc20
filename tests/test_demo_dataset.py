"""backbones.demo.dataset, the built-in dataset: deterministic, valid COCO / ADE20K layouts read
by mmdet / mmseg; regenerated, interrupted or foreign folders handled without losing data."""
import hashlib
import json
import os

import cv2
import numpy as np
import pytest

from backbones.demo import dataset as synthetic
from backbones.demo.dataset import CLASSES, class_names, make_dataset

from .conftest import DEMO_DET_CONFIG, DEMO_SEG_CONFIG


def _digest(root):
    h = hashlib.sha256()
    for folder, _, files in sorted(os.walk(root)):
        for f in sorted(files):
            if f == 'dataset.json':
                continue
            with open(os.path.join(folder, f), 'rb') as fh:
                h.update(f.encode() + fh.read())
    return h.hexdigest()


@pytest.fixture(scope='module')
def dataset(tmp_path_factory):
    root = tmp_path_factory.mktemp('synthetic')
    return str(root), make_dataset(str(root), num_train=6, num_val=3, size=(96, 128), seed=3)


def test_deterministic_per_seed(dataset, tmp_path):
    root, _ = dataset
    again = make_dataset(str(tmp_path / 'a'), num_train=6, num_val=3, size=(96, 128), seed=3)
    assert _digest(os.path.dirname(again['coco'])) == _digest(root)
    other = make_dataset(str(tmp_path / 'b'), num_train=6, num_val=3, size=(96, 128), seed=4)
    assert _digest(os.path.dirname(other['coco'])) != _digest(root)


def test_coco_annotations_are_consistent(dataset):
    from pycocotools import mask as mask_utils
    _, roots = dataset
    with open(os.path.join(roots['coco'], 'annotations', 'instances_train2017.json')) as f:
        coco = json.load(f)
    assert len(coco['images']) == 6 and coco['annotations']
    # all 80 COCO categories with their real ids, so label indices are COCO's own
    from mmdet.datasets import CocoDataset
    assert [c['name'] for c in coco['categories']] == list(CocoDataset.METAINFO['classes'])
    used = {c['id']: c['name'] for c in coco['categories']}
    assert {used[a['category_id']] for a in coco['annotations']} <= set(class_names()['coco'])
    for ann in coco['annotations']:
        mask = mask_utils.decode(ann['segmentation'])
        assert mask.shape == (96, 128) and mask.sum() == ann['area'] > 0
        ys, xs = np.nonzero(mask)
        assert ann['bbox'] == [xs.min(), ys.min(), xs.max() + 1 - xs.min(), ys.max() + 1 - ys.min()]


def test_mmdet_and_mmseg_read_it_with_the_project_configs(dataset):
    from backbones.demo.configs import detection_config, segmentation_config
    from mmdet.registry import DATASETS as DET_DATASETS
    from mmdet.utils import register_all_modules as det_modules
    from mmseg.registry import DATASETS as SEG_DATASETS
    from mmseg.utils import register_all_modules as seg_modules
    _, roots = dataset
    det_modules()
    cfg = detection_config(DEMO_DET_CONFIG, roots['coco'], 96, iters=2)
    det = DET_DATASETS.build(cfg.train_dataloader.dataset)
    item = det[0]
    assert item['inputs'].shape[0] == 3 and len(item['data_samples'].gt_instances) > 0
    assert det.metainfo['classes'][0] == 'person'  # COCO's own 80 classes, unchanged
    labels = {int(l) for i in range(len(det)) for l in det[i]['data_samples'].gt_instances.labels}
    assert labels <= {det.metainfo['classes'].index(n) for n in class_names()['coco']}
    seg_modules()
    cfg = segmentation_config(DEMO_SEG_CONFIG, roots['ade'], 96, iters=2)
    seg = SEG_DATASETS.build(cfg.test_dataloader.dataset)
    labels = np.unique(seg[0]['data_samples'].gt_sem_seg.data.numpy())
    names = [seg.metainfo['classes'][i] for i in labels if i != 255]
    assert set(names) <= set(class_names()['ade']) and {'wall', 'floor'} & set(names)


def test_every_class_appears(tmp_path):
    roots = make_dataset(str(tmp_path), num_train=20, num_val=2, size=(96, 96), seed=0)
    with open(os.path.join(roots['coco'], 'annotations', 'instances_train2017.json')) as f:
        ids = {a['category_id'] for a in json.load(f)['annotations']}
    assert ids == {v[1] for v in CLASSES.values()}



def test_regenerating_with_other_sizes_leaves_no_stale_images(tmp_path):
    root = tmp_path / 'data'
    make_dataset(str(root), num_train=4, num_val=2, size=(64, 64), seed=0)
    (root / 'notes.txt').write_text('mine')
    roots = make_dataset(str(root), num_train=2, num_val=1, size=(48, 80), seed=0)
    fresh = tmp_path / 'fresh'
    make_dataset(str(fresh), num_train=2, num_val=1, size=(48, 80), seed=0)
    assert _files(root / 'coco') == _files(fresh / 'coco') and _files(root / 'ade') == _files(fresh / 'ade')
    images = os.listdir(os.path.join(roots['ade'], 'images', 'training'))
    assert len(images) == 2
    assert all(cv2.imread(os.path.join(roots['ade'], 'images', 'training', i)).shape[:2] == (48, 80) for i in images)
    assert json.loads((root / 'dataset.json').read_text())['size'] == [48, 80]
    assert (root / 'notes.txt').read_text() == 'mine'  # not the dataset's: kept
    assert not [n for n in os.listdir(root) if n.startswith('.make_dataset-')]


def test_an_interrupted_generation_is_never_taken_for_complete(tmp_path, monkeypatch):
    root = tmp_path / 'data'
    make_dataset(str(root), num_train=2, num_val=1, size=(64, 64), seed=0)
    before = _files(root)

    def interrupted(*args, **kwargs):
        os.makedirs(os.path.join(args[0], 'train2017'))
        raise KeyboardInterrupt

    monkeypatch.setattr(synthetic, '_write_dataset', interrupted)
    with pytest.raises(KeyboardInterrupt):
        make_dataset(str(root), num_train=3, num_val=1, size=(64, 64), seed=0)
    assert _files(root) == before  # the previous dataset, complete and recorded, is untouched
    monkeypatch.undo()
    # a root whose record is missing (a swap cut short) is rebuilt, not reused
    (root / 'dataset.json').unlink()
    (root / '.make_dataset-left').mkdir()
    make_dataset(str(root), num_train=3, num_val=1, size=(64, 64), seed=0)
    assert len(os.listdir(root / 'coco' / 'train2017')) == 3 and (root / 'dataset.json').exists()
    assert not (root / '.make_dataset-left').exists()


def test_foreign_dataset_folders_are_refused(tmp_path):
    root = tmp_path / 'data'
    (root / 'coco').mkdir(parents=True)
    (root / 'coco' / 'real.jpg').write_bytes(b'')
    with pytest.raises(FileExistsError, match='was not written by make_dataset.*Choose an empty folder'):
        make_dataset(str(root), num_train=2, num_val=1, size=(64, 64))
    assert (root / 'coco' / 'real.jpg').exists()


def test_make_dataset_arguments_are_checked(tmp_path):
    with pytest.raises(ValueError, match='seed must be an integer >= 0'):
        make_dataset(str(tmp_path), seed=-1)
    with pytest.raises(ValueError, match='at least 32 pixels'):
        make_dataset(str(tmp_path), size=(0, 64))
    assert not os.listdir(tmp_path)



# ---------------------------------------------------------------- built-in dataset
def _files(folder):
    return sorted(os.path.relpath(os.path.join(d, f), folder) for d, _, fs in os.walk(folder) for f in fs)


def test_the_classification_layout_is_read_by_mmpretrain(dataset):
    """The ImageNet folder layout: one folder per shape class, every listed crop there, read by
    mmpretrain's ImageNet dataset with the five class names."""
    pytest.importorskip('mmpretrain')
    from mmpretrain.datasets import ImageNet
    root, roots = dataset
    names = class_names()['imagenet']
    assert sorted(os.listdir(os.path.join(roots['imagenet'], 'train'))) == sorted(names)
    for split in ('train', 'val'):
        data = ImageNet(data_root=roots['imagenet'], split=split, metainfo=dict(classes=names), pipeline=[])
        assert len(data) > 0 and tuple(data.metainfo['classes']) == tuple(names)
        labels = {data.get_data_info(i)['gt_label'] for i in range(len(data))}
        assert labels <= set(range(len(names)))
        info = data.get_data_info(0)
        assert os.path.isfile(info['img_path'])
        assert os.path.basename(os.path.dirname(info['img_path'])) == names[info['gt_label']]
        image = cv2.imread(info['img_path'])
        assert image.shape[0] == image.shape[1] == 48  # half the scenes' shorter side (96x128)
