"""The main job on a built-in default: train and evaluate a detector and a segmentor.

:func:`run_demo` makes the synthetic dataset (:mod:`backbones.demo.dataset`), trains a
Mask R-CNN and a Semantic FPN from the project's own configs (only ``data_root``, the image
size and the schedule are changed), evaluates them with mmdet's COCO metric and mmseg's
mIoU, saves checkpoints, draws predictions on validation images with the mmdet / mmseg
visualizers into one PNG, then exports both trained models end to end (ONNX by default,
``export_formats`` adds ExecuTorch fp32 / int8) and evaluates the exports through the
torch-free runner with the same metrics (:mod:`backbones.demo.exported`), and returns a
results table with eager and exported figures side by side.
"""
from __future__ import annotations

import copy
import os
import os.path as osp
import time
from typing import Any, Dict, List, Optional, Sequence

import numpy as np
from mmengine.config import Config
from mmengine.logging import print_log

from ..fileio import atomic_path, write_json
from ..registry import FAMILIES
from ..runtime.cli import check_writable_dir
from ..runtime.engine import build_runner
from ..runtime.models import load_config
from .configs import check_config_task, classification_config, detection_config, segmentation_config
from .dataset import make_dataset
from .exported import EVALUATED_FORMATS, evaluate_export, export_trained

def _train_and_test(cfg: Config, name: str) -> Dict[str, Any]:
    print_log(f'[demo] training {name}: {cfg.train_cfg.max_iters} iterations, batch '
              f'{cfg.train_dataloader.batch_size}, work dir {cfg.work_dir}', logger='current')
    start = time.time()
    runner = build_runner(cfg)
    runner.train()
    train_time = time.time() - start
    print_log(f'[demo] evaluating {name} on the validation split', logger='current')
    metrics = dict(runner.test() or {})
    if cfg.get('default_scope') == 'mmdet' and not metrics:
        # CocoMetric returns nothing when no box passes the score threshold: that is an AP of 0
        print_log(f'[demo] {name} made no detections on the validation split', logger='current')
        metrics = {f'coco/{kind}_mAP{suffix}': 0.0 for kind in ('bbox', 'segm') for suffix in ('', '_50', '_75')}
    checkpoint = osp.join(cfg.work_dir, f'iter_{cfg.train_cfg.max_iters}.pth')
    with atomic_path(osp.join(cfg.work_dir, 'config.py')) as tmp:
        cfg.dump(tmp)
    return dict(metrics={k: float(v) for k, v in metrics.items()}, train_seconds=train_time,
                checkpoint=checkpoint, config=osp.join(cfg.work_dir, 'config.py'))


def _export_and_evaluate(result: Dict[str, Any], cfg: Config, task: str, size: int,
                         formats: Sequence[str]) -> None:
    """Export ``result``'s trained model end to end to ``formats`` and evaluate each export
    on the validation split; adds ``result['exports']``."""
    print_log(f'[demo] exporting {result["config_name"]} end to end ({", ".join(formats)}) and evaluating '
              'the exports through the runner', logger='current')
    exports = export_trained(cfg, result['config'], result['checkpoint'], (size, size), formats,
                             osp.join(cfg.work_dir, 'export'))
    for fmt, info in exports.items():
        if 'path' in info:
            start = time.time()
            info.update(evaluate_export(cfg, info['path'], task))
            info['eval_seconds'] = time.time() - start
    result['exports'] = exports


def _titled(tile_row: np.ndarray, title: str) -> np.ndarray:
    import cv2
    band = np.full((24, tile_row.shape[1], 3), 255, np.uint8)
    cv2.putText(band, title, (6, 17), cv2.FONT_HERSHEY_SIMPLEX, 0.5, (0, 0, 0), 1, cv2.LINE_AA)
    return np.concatenate([band, tile_row], axis=0)


def _prediction_row(task: Dict[str, Any], image_paths: List[str], title: str, init, infer, visualizers,
                    vis_options: Optional[dict] = None, **draw_kwargs) -> np.ndarray:
    """One titled row of validation images with ``task``'s predictions drawn by its toolbox."""
    import mmcv
    model = init(task['config'], task['checkpoint'], device='cpu')
    vis_cfg = copy.deepcopy(model.cfg.visualizer)
    vis_cfg.update(name=f'demo_{title}_{time.time()}', vis_backends=None, save_dir=None, **(vis_options or {}))
    visualizer = visualizers.build(vis_cfg)
    visualizer.dataset_meta = model.dataset_meta
    tiles = []
    for path in image_paths:
        image = mmcv.imread(path, channel_order='rgb')
        visualizer.add_datasample('pred', image, infer(model, path), draw_gt=False, show=False, **draw_kwargs)
        tiles.append(visualizer.get_image())
    return _titled(np.concatenate(tiles, axis=1), title)


def _draw(det: Optional[Dict[str, Any]], seg: Optional[Dict[str, Any]], image_paths: List[str],
          out_file: str) -> str:
    """Draw predictions of both models (and the images) into one PNG, one row per model."""
    import mmcv
    rows = []
    if det is not None:
        from mmdet.apis import inference_detector, init_detector
        from mmdet.registry import VISUALIZERS
        rows.append(_prediction_row(det, image_paths, f'{det["config_name"][:-3]}  (score > 0.5)', init_detector,
                                    inference_detector, VISUALIZERS, pred_score_thr=0.5))
    if seg is not None:
        from mmseg.apis import inference_model, init_model
        from mmseg.registry import VISUALIZERS
        rows.append(_prediction_row(seg, image_paths, seg['config_name'][:-3], init_model, inference_model,
                                    VISUALIZERS, vis_options=dict(alpha=0.6), with_labels=False))
    width = max(r.shape[1] for r in rows)
    rows = [np.pad(r, ((0, 0), (0, width - r.shape[1]), (0, 0)), constant_values=255) for r in rows]
    with atomic_path(out_file) as tmp:
        mmcv.imwrite(np.concatenate(rows, axis=0)[..., ::-1], tmp)
    return out_file


def pretraining_configs(configs: Sequence[str], classification_dir: str) -> Dict[str, str]:
    """For each distinct backbone variant of ``configs``: its classification config in
    ``classification_dir`` (``{prefix}-{arch}_*.py``), by variant name."""
    import glob
    found: Dict[str, str] = {}
    for config in configs:
        backbone = load_config(config).model.backbone
        cls = FAMILIES[backbone.type]
        name = f'{cls.model_prefix}_{backbone.arch}'
        if name in found:
            continue
        matches = sorted(glob.glob(osp.join(classification_dir, f'{cls.model_prefix}-{backbone.arch}_*.py')))
        if not matches:
            raise FileNotFoundError(f'{config}: no classification config for {cls.family}-{backbone.arch.upper()} in '
                                    f'{classification_dir} ({cls.model_prefix}-{backbone.arch}_*.py) to pretrain with')
        found[name] = matches[0]
    return found


def _pretrain(configs: Sequence[str], classification_dir: str, root: str, size: int, iters: int, batch_size: int,
              lr: float, work_dir: str) -> Dict[str, Dict[str, Any]]:
    """Pretrain a classifier of each backbone variant the task configs use, on the built-in
    dataset's ImageNet layout; returns per variant its metrics and checkpoint."""
    out: Dict[str, Dict[str, Any]] = {}
    for name, config in pretraining_configs(configs, classification_dir).items():
        cfg = classification_config(config, root, max(32, size // 2), iters, batch_size, lr,
                                    work_dir=osp.join(work_dir, 'pretrain', name))
        out[name] = dict(_train_and_test(cfg, osp.basename(config)), config_name=osp.basename(config))
    return out


def run_demo(work_dir: str = 'work_dirs/demo', data_root: Optional[str] = None,
             det_config: Optional[str] = None, seg_config: Optional[str] = None,
             num_train: int = 200, num_val: int = 50, size: int = 192, det_iters: int = 120,
             seg_iters: int = 150, batch_size: int = 4, det_lr: float = 1e-3, seg_lr: float = 1e-3,
             num_vis: int = 4, seed: int = 0, export_formats: Sequence[str] = ('onnx',),
             classification_dir: Optional[str] = None, pretrain_iters: int = 60,
             pretrain_lr: float = 2e-3) -> Dict[str, Any]:
    """Run the whole job; returns the results (also written to ``work_dir/results.json``).

    Args:
        det_config / seg_config: a detection and a segmentation config of the project (the
            tools pass ``configs/detection/mask-rcnn_efficientformerv2-s0_...`` and
            ``configs/segmentation/fpn_edgevit-xxs_...``); None skips that task.
        export_formats: end-to-end exports evaluated after training (empty: none).
        classification_dir: with it (the checkout's ``configs/classification``), each backbone
            variant of the task configs is first pretrained as a classifier with its
            classification config on the dataset's ImageNet layout (``pretrain_iters``
            iterations), and the detector and segmentor start from that checkpoint, as on COCO
            and ADE20K they start from ImageNet's.
    """
    if not (det_config or seg_config):
        raise ValueError('the main job needs a detection or a segmentation config (det_config, seg_config)')
    unknown = [f for f in export_formats if f not in EVALUATED_FORMATS]
    if unknown:
        raise ValueError(f'export formats {unknown}: the demo evaluates {list(EVALUATED_FORMATS)}')
    if det_config:
        check_config_task(det_config, 'detection', '--det-config')
    if seg_config:
        check_config_task(seg_config, 'segmentation', '--seg-config')
    check_writable_dir(work_dir, '--work-dir')
    data_root = data_root or osp.join(work_dir, 'data')
    check_writable_dir(osp.dirname(osp.abspath(data_root)), '--data-root')
    start = time.time()
    print_log(f'[demo] generating the built-in dataset in {data_root} ({num_train} train / {num_val} val '
              f'images, {size}x{size}, seed {seed})', logger='current')
    roots = make_dataset(data_root, num_train=num_train, num_val=num_val, size=(size, size), seed=seed)
    results: Dict[str, Any] = dict(dataset=dict(root=data_root, num_train=num_train, num_val=num_val, size=size,
                                                seed=seed))
    pretrained: Dict[str, Dict[str, Any]] = {}
    if classification_dir:
        pretrained = _pretrain([c for c in (det_config, seg_config) if c], classification_dir, roots['imagenet'], size,
                               pretrain_iters, 2 * batch_size, pretrain_lr, work_dir)
        results['pretraining'] = pretrained
    tasks = (('detection', det_config, detection_config, roots['coco'], det_iters, det_lr),
             ('segmentation', seg_config, segmentation_config, roots['ade'], seg_iters, seg_lr))
    for task, config, adapt, root, iters, lr in tasks:
        if not config:
            continue
        cfg = adapt(config, root, size, iters, batch_size, lr, work_dir=osp.join(work_dir, task))
        backbone = cfg.model.backbone
        variant = f'{FAMILIES[backbone.type].model_prefix}_{backbone.arch}'
        if variant in pretrained:
            backbone.init_cfg = dict(type='Pretrained', checkpoint=pretrained[variant]['checkpoint'])
        result = dict(_train_and_test(cfg, osp.basename(config)), config_name=osp.basename(config),
                      pretrained=pretrained.get(variant, {}).get('checkpoint'))
        results[task] = result
        if export_formats:
            _export_and_evaluate(result, cfg, task, size, export_formats)
    det, seg = results.get('detection'), results.get('segmentation')
    if num_vis > 0 and (det or seg):
        images = sorted(os.listdir(osp.join(roots['coco'], 'val2017')))[:num_vis]
        results['predictions_png'] = _draw(det, seg, [osp.join(roots['coco'], 'val2017', i) for i in images],
                                           osp.join(work_dir, 'predictions.png'))
    results['total_seconds'] = time.time() - start
    write_json(osp.join(work_dir, 'results.json'), results, indent=2)
    return results


#: (metrics key, label, scale) per task, as the results table prints them
TABLE_METRICS = {
    'detection': (('coco/bbox_mAP', 'bbox AP', 1), ('coco/bbox_mAP_50', 'bbox AP50', 1),
                  ('coco/segm_mAP', 'mask AP', 1), ('coco/segm_mAP_50', 'mask AP50', 1)),
    'segmentation': (('mIoU', 'mIoU', 100), ('aAcc', 'pixel acc', 100), ('mAcc', 'mean acc', 100)),
}


def format_results(results: Dict[str, Any]) -> str:
    """The results table printed at the end of the job: eager PyTorch and each end-to-end
    export side by side, evaluated the same way on the validation split."""
    lines = []
    for name, r in results.get('pretraining', {}).items():
        top1 = r['metrics'].get('accuracy/top1')
        lines += [f'pretraining: {r["config_name"]} on the built-in classification set',
                  f'  top-1 {top1:.1f}% after {r["train_seconds"] / 60:.1f} min; checkpoint {r["checkpoint"]}'
                  if top1 is not None else f'  checkpoint {r["checkpoint"]}']
    for task in ('detection', 'segmentation'):
        r = results.get(task)
        if not r:
            continue
        exports = r.get('exports', {})
        columns = ['eager'] + list(exports)
        metrics = {'eager': r['metrics'], **{fmt: info.get('metrics', {}) for fmt, info in exports.items()}}
        lines += ['', f'{task}: {r["config_name"]}',
                  f'  {"metric":<12}' + ''.join(f'{c:>17}' for c in columns)]
        for key, label, scale in TABLE_METRICS[task]:
            if key not in r['metrics']:
                continue
            cells = [f'{metrics[c][key] / scale:.3f}' if key in metrics[c] else '-' for c in columns]
            lines.append(f'  {label:<12}' + ''.join(f'{cell:>17}' for cell in cells))
        if any('ms_median' in info for info in exports.values()):
            # the exports as an app runs them, through the runner (eager: not comparable)
            cells = ['-'] + [f'{exports[c]["ms_median"]:.1f}' if 'ms_median' in exports[c] else '-'
                             for c in columns[1:]]
            lines.append(f'  {"ms / image":<12}' + ''.join(f'{cell:>17}' for cell in cells))
        for fmt, info in exports.items():
            if 'error' in info:
                lines.append(f'  {fmt}: export failed: {info["error"]}')
            else:
                lines.append(f'  {fmt}: {info["path"]} ({info["size_mb"]:.1f} MB)')
        lines.append(f'  trained in {r["train_seconds"] / 60:.1f} min, checkpoint {r["checkpoint"]}'
                     + (f', backbone initialised from {r["pretrained"]}' if r.get('pretrained') else ''))
    if 'predictions_png' in results:
        lines.append(f'predictions drawn on validation images: {results["predictions_png"]}')
    lines.append(f'total time {results["total_seconds"] / 60:.1f} min')
    return '\n'.join(lines)
