"""A short training run of each model on the built-in dataset, on the GPU in mixed precision
as ``tools/train.py --amp`` trains: per model the median iteration time, the peak GPU memory,
the last loss, and which of mmcv's compiled ops ran, on which device and in which dtype.

Without CUDA it runs on the CPU in float32 and says so (``--amp`` needs CUDA): a check of the
script, not a GPU measurement. ``tools/gpu_smoke.py`` is the command line.
"""
from __future__ import annotations

import importlib
import math
import os.path as osp
import statistics
import time
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from typing import Callable, Dict, Iterator, List, Optional, Sequence, Set, Tuple

import torch
from mmengine.hooks import Hook
from mmengine.logging import print_log

from ..runtime.engine import build_runner, use_amp
from ..runtime.models import load_config
from .configs import classification_config, config_task, detection_config, segmentation_config
from .dataset import make_dataset


@dataclass
class SmokeResult:
    """One model's run: ``median_ms`` over the iterations after the first tenth,
    ``peak_mib`` of GPU memory (None on CPU), ``mmcv_ops``: op -> ``'cuda float16'`` ..."""
    name: str
    config: str
    device: str
    amp: bool
    iters: int
    batch_size: int
    median_ms: Optional[float] = None
    peak_mib: Optional[float] = None
    last_loss: Optional[float] = None
    mmcv_ops: Dict[str, List[str]] = field(default_factory=dict)
    error: Optional[str] = None

    @property
    def ok(self) -> bool:
        return self.error is None and self.last_loss is not None and math.isfinite(self.last_loss)


def _first_tensor(args, kwargs) -> Optional[torch.Tensor]:
    for value in list(args) + list(kwargs.values()):
        if isinstance(value, torch.Tensor):
            return value
    return None


@contextmanager
def recording_mmcv_ops() -> Iterator[Dict[str, Set[str]]]:
    """Every call into mmcv's compiled ops (``mmcv._ext``, which ``mmcv.ops`` calls through)
    recorded as op -> {``'<device> <dtype>'`` of its first tensor argument}; restored after."""
    calls: Dict[str, Set[str]] = {}
    ext = importlib.import_module('mmcv._ext')
    originals = {name: getattr(ext, name) for name in dir(ext)
                 if not name.startswith('_') and callable(getattr(ext, name))}

    def wrap(name: str, fn: Callable) -> Callable:
        def recorded(*args, **kwargs):
            tensor = _first_tensor(args, kwargs)
            where = f'{tensor.device.type} {str(tensor.dtype).replace("torch.", "")}' if tensor is not None else '-'
            calls.setdefault(name, set()).add(where)
            return fn(*args, **kwargs)
        return recorded

    for name, fn in originals.items():
        setattr(ext, name, wrap(name, fn))
    try:
        yield calls
    finally:
        for name, fn in originals.items():
            setattr(ext, name, fn)


class _Clock(Hook):
    """Starts (lowest priority: last before the step) or stops (highest: first after it) the
    clock of each training iteration; on CUDA after the device has finished its work."""

    def __init__(self, times: List[float], start: bool, cuda: bool, losses: Optional[List[float]] = None) -> None:
        self.times, self.start, self.cuda, self.losses = times, start, cuda, losses
        self._begun = 0.0

    def _now(self) -> float:
        if self.cuda:
            torch.cuda.synchronize()
        return time.perf_counter()

    def before_train_iter(self, runner, batch_idx: int, data_batch=None) -> None:
        if self.start:
            self.times.append(-self._now())

    def after_train_iter(self, runner, batch_idx: int, data_batch=None, outputs=None) -> None:
        if not self.start:
            self.times[-1] += self._now()
            if outputs is not None and 'loss' in outputs:
                self.losses.append(float(outputs['loss'].detach()))


def smoke_config(config: str, data_root: Dict[str, str], size: int, iters: int, batch_size: Optional[int],
                 workers: int, work_dir: str):
    """``config`` on the built-in dataset for ``iters`` iterations, saving no checkpoint;
    the batch is the config's own unless ``batch_size``."""
    task = config_task(config)
    if task == 'classification':
        # the recipe's batch of 128-256 images per GPU would not fit a small card at ImageNet's 224
        cfg = classification_config(config, data_root['imagenet'], max(32, size // 2), iters=iters,
                                    batch_size=batch_size or 32, work_dir=work_dir)
    else:
        batch = batch_size or load_config(config).train_dataloader.batch_size
        make = detection_config if task == 'detection' else segmentation_config
        cfg = make(config, data_root['coco' if task == 'detection' else 'ade'], size, iters=iters, batch_size=batch,
                   work_dir=work_dir)
    cfg.default_hooks.checkpoint = None
    cfg.default_hooks.logger = dict(type='LoggerHook', interval=max(iters // 5, 1))
    cfg.log_level = 'WARNING'
    for key in ('train_dataloader', 'test_dataloader'):
        cfg[key].num_workers = workers
        cfg[key].persistent_workers = workers > 0
    return cfg


def run_model(name: str, config: str, data_root: Dict[str, str], size: int, iters: int,
              batch_size: Optional[int], amp: bool, workers: int, work_dir: str) -> SmokeResult:
    """Train one model for ``iters`` iterations and measure it (errors are recorded, not raised)."""
    cuda = torch.cuda.is_available()
    amp = amp and cuda
    cfg = smoke_config(config, data_root, size, iters, batch_size, workers, osp.join(work_dir, name))
    result = SmokeResult(name, config, 'cuda' if cuda else 'cpu', amp, iters, cfg.train_dataloader.batch_size)
    if amp:
        use_amp(cfg)
    times: List[float] = []
    losses: List[float] = []
    try:
        runner = build_runner(cfg)
        runner.register_hook(_Clock(times, start=True, cuda=cuda), priority='LOWEST')
        runner.register_hook(_Clock(times, start=False, cuda=cuda, losses=losses), priority='HIGHEST')
        if cuda:
            torch.cuda.empty_cache()
            torch.cuda.reset_peak_memory_stats()
        with recording_mmcv_ops() as ops:
            runner.train()
        if cuda:
            result.peak_mib = torch.cuda.max_memory_allocated() / 2 ** 20
        result.mmcv_ops = {op: sorted(where) for op, where in sorted(ops.items())}
    except Exception as err:  # noqa: BLE001  (one model's failure is its row of the table)
        result.error = f'{type(err).__name__}: {" ".join(str(err).split())[:300]}'.replace('|', '/')
    finally:
        runner = None
        if cuda:
            torch.cuda.empty_cache()
    warmup = len(times) // 10
    if len(times) > warmup:
        result.median_ms = 1000 * statistics.median(times[warmup:])
    result.last_loss = losses[-1] if losses else None
    return result


def mmcv_build() -> str:
    """What mmcv's ops were compiled with: ``'mmcv 2.1.0, ops built with CUDA 12.1 (GCC 12.2)'``."""
    import mmcv
    from mmcv.ops import get_compiler_version, get_compiling_cuda_version
    cuda = get_compiling_cuda_version()
    built = 'CPU only' if cuda == 'not available' else f'CUDA {cuda}'
    return f'mmcv {mmcv.__version__}, ops built {built} ({get_compiler_version()})'


def run_smoke(models: Sequence[Tuple[str, str]], work_dir: str, iters: int = 50, size: int = 512,
              batch_size: Optional[int] = None, amp: bool = True, workers: int = 2, num_train: int = 16,
              log: Callable[[str], None] = lambda line: print_log(line, logger='current')) -> List[SmokeResult]:
    """Train each ``(name, config)`` of ``models`` for ``iters`` iterations on the built-in
    dataset at ``size`` pixels; returns one result per model."""
    if not torch.cuda.is_available():
        log('no CUDA device: the models train on the CPU in float32' + (' (--amp needs CUDA)' if amp else '')
            + '; the times are CPU times and no GPU memory is measured')
    roots = make_dataset(osp.join(work_dir, 'data'), num_train=num_train, num_val=1, size=(size, size), seed=0)
    results = []
    for name, config in models:
        log(f'{name}: {iters} iterations at {size}x{size}')
        result = run_model(name, config, roots, size, iters, batch_size, amp, workers, work_dir)
        log(f'{name}: ' + (f'median {result.median_ms:.1f} ms per iteration, last loss {result.last_loss:.4f}'
                           if result.error is None else f'failed: {result.error}'))
        results.append(result)
    return results


def _ops_cell(result: SmokeResult) -> str:
    return '; '.join(f'{op}: {", ".join(where)}' for op, where in result.mmcv_ops.items()) or 'none'


def format_smoke(results: Sequence[SmokeResult]) -> str:
    """The results as a Markdown table, and what on CUDA ran elsewhere."""
    rows = ['| model | device | precision | batch | iterations | median ms / iter | peak GPU MiB | last loss | '
            'mmcv ops (device dtype) |',
            '|---|---|---|---|---|---|---|---|---|']
    for r in results:
        median = f'{r.median_ms:.1f}' if r.median_ms is not None else '—'
        peak = f'{r.peak_mib:.0f}' if r.peak_mib is not None else '—'
        loss = (f'{r.last_loss:.4f}' if r.last_loss is not None else '—') if r.error is None else f'failed: {r.error}'
        rows.append(f'| {r.name} | {r.device} | {"float16 AMP" if r.amp else "float32"} | {r.batch_size} | '
                    f'{r.iters} | {median} | {peak} | {loss} | {_ops_cell(r)} |')
    notes = [f'{r.name}: mmcv op {op} ran on the CPU' for r in results if r.device == 'cuda'
             for op, where in r.mmcv_ops.items() if any(w.startswith('cpu') for w in where)]
    return '\n'.join(rows + ([''] + notes if notes else []))


def smoke_data(results: Sequence[SmokeResult]) -> dict:
    return dict(mmcv=mmcv_build(), results=[asdict(r) for r in results])
