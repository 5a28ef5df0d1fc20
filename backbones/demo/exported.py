"""The main job's last step: export the trained models end to end and evaluate the exports.

Each trained model is exported as an app would ship it (:mod:`backbones.export.contract`:
uint8 RGB image in; boxes / scores / labels (and masks), or seg_map out), then every
validation image is read from disk as an app would read it and run through
the torch-free reference runner (:mod:`backbones.export.runner`), and its predictions go through
the same mmdet / mmseg evaluator the eager test used, so the metrics compare side by side.
int8 exports are calibrated on training images.
"""
from __future__ import annotations

import time
from typing import Any, Dict, List, Optional, Sequence

import numpy as np
from mmengine.logging import print_log

from ..export import runner

#: what --export-formats offers (the formats that run on this machine)
EVALUATED_FORMATS = ('onnx', 'executorch', 'executorch-int8')


def _read_rgb(path: str) -> np.ndarray:
    from PIL import Image
    with Image.open(path) as image:
        return np.asarray(image.convert('RGB'))


def training_images(cfg, count: int = 16) -> List[str]:
    """Paths of the first ``count`` training images of ``cfg``'s training set (int8 calibration)."""
    from mmengine.registry import DATASETS, init_default_scope
    init_default_scope(cfg.get('default_scope'))
    dataset = DATASETS.build(cfg.train_dataloader.dataset)
    return [dataset.get_data_info(i)['img_path'] for i in range(min(count, len(dataset)))]


def export_trained(cfg, config_file: str, checkpoint: str, size: Sequence[int], formats: Sequence[str],
                   out_dir: str) -> Dict[str, Dict[str, Any]]:
    """Export the trained model of ``config_file`` end to end to each format. Returns, per
    format, ``path`` and the export's description, or ``error`` when it failed."""
    import torch
    from ..export.contract import end_to_end, export_end_to_end
    from ..export.targets import build_target
    size = (int(size[0]), int(size[1]))
    try:
        target = end_to_end(build_target(config_file, size, checkpoint), config=config_file, checkpoint=checkpoint)
    except NotImplementedError as err:  # a model kind without an end-to-end form: reported, the job goes on
        print_log(f'[demo] no end-to-end export: {err}', logger='current')
        return {fmt: dict(error=str(err)) for fmt in formats}
    calibration = None
    if any(fmt.endswith('int8') for fmt in formats):
        from PIL import Image
        calibration = []
        for path in training_images(cfg):
            image = Image.fromarray(_read_rgb(path)).resize((size[1], size[0]), Image.BILINEAR)
            calibration.append(torch.from_numpy(np.asarray(image).copy())[None])
    exports = {}
    for fmt in formats:
        start = time.time()
        try:
            result = export_end_to_end(target, fmt, out_dir, calibration=calibration)
        except Exception as err:  # noqa: BLE001  (reported in the results; the other formats go on)
            first_line = str(err).strip().splitlines()[0] if str(err).strip() else ''
            exports[fmt] = dict(error=f'{type(err).__name__}: {first_line}')
            print_log(f'[demo] export {fmt} failed: {exports[fmt]["error"]}', logger='current')
            continue
        exports[fmt] = dict(path=result.path, seconds=time.time() - start, size_mb=result.size_bytes / 1e6,
                            description=result.describe())
        print_log(f'[demo] {result.describe()}', logger='current')
    return exports


def _data_sample(sample, prediction: Dict[str, np.ndarray], task: str):
    """``sample`` (from the test loader) with the runner's prediction in mmdet / mmseg form."""
    import torch
    from mmengine.structures import InstanceData, PixelData
    if task == 'segmentation':
        sample.pred_sem_seg = PixelData(data=torch.from_numpy(prediction['seg_map'].astype(np.int64))[None])
        return sample
    instances = InstanceData()
    instances.bboxes = torch.from_numpy(np.asarray(prediction['boxes'], np.float32).reshape(-1, 4))
    instances.scores = torch.from_numpy(np.asarray(prediction['scores'], np.float32))
    instances.labels = torch.from_numpy(np.asarray(prediction['labels'], np.int64))
    if 'masks' in prediction:
        instances.masks = torch.from_numpy(np.asarray(prediction['masks']).astype(bool))
    sample.pred_instances = instances
    return sample


def evaluate_export(cfg, path: str, task: str, threads: Optional[int] = None) -> Dict[str, Any]:
    """Run the export at ``path`` through the runner on ``cfg``'s test split and evaluate its
    predictions with ``cfg``'s test evaluator (the one the eager test used).

    Returns ``metrics`` and the latency of the runner's ``predict`` (letterbox, the exported
    program, results mapped back to the image; image decoding excluded) per image, in ms:
    ``ms_median`` and ``ms_p90`` over the split, at ``threads`` (default: the runtime's)."""
    from mmengine.evaluator import Evaluator
    from mmengine.registry import init_default_scope
    from mmengine.runner import Runner
    model = runner.load_model(path, threads=threads)
    init_default_scope(cfg.get('default_scope'))
    loader = Runner.build_dataloader(cfg.test_dataloader, seed=0)
    evaluator = Evaluator(cfg.test_evaluator)
    evaluator.dataset_meta = loader.dataset.metainfo
    latencies = []
    for batch in loader:
        samples = []
        for sample in batch['data_samples']:
            image = _read_rgb(sample.img_path)
            start = time.perf_counter()
            prediction = runner.predict(model, image)
            latencies.append((time.perf_counter() - start) * 1e3)
            samples.append(_data_sample(sample, prediction, task))
        evaluator.process(data_samples=samples, data_batch=batch)
    metrics = {k: float(v) for k, v in evaluator.evaluate(len(loader.dataset)).items()}
    timed = np.asarray(latencies or [np.nan])
    return dict(metrics=metrics, ms_median=float(np.median(timed)), ms_p90=float(np.percentile(timed, 90)))
