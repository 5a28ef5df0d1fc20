"""Latency of exported backbones beside MobileNetV2 and ResNet-18, measured in the same run.

Every model, ours and the torchvision baselines, is exported the same way (ExecuTorch with
XNNPACK fp32 and int8, and ONNX for onnxruntime) and timed the same way
(:mod:`.timing`), at 1 thread and at all cores. Ratios are to MobileNetV2 x1.0 of the same
run, format and thread count, so they carry over between machines better than milliseconds
do.
"""
from __future__ import annotations

import os.path as osp
from dataclasses import dataclass
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import torch

from ..export.convert import export, export_path
from ..export.targets import build_target, target_name
from .baselines import BASELINES, REFERENCE, baseline_target, top1
from .timing import HOST_THREADS, host_threads, runtime_call, time_interleaved

@dataclass
class Timing:
    model: str
    fmt: str
    threads: int
    median_ms: float
    p90_ms: float
    runs: int
    ratio: Optional[float] = None


def run_benchmark(models: Sequence[str], size: Tuple[int, int], formats: Sequence[str], threads: Sequence[int],
                  seconds: float, out_dir: str, log: Callable[[str], None] = print,
                  reuse: bool = False, torch_threads: Optional[int] = HOST_THREADS,
                  clone_outputs: bool = False) -> List[Timing]:
    """Export and time ``models`` (backbone names, configs, or baseline names) plus the
    baselines; returns the timings with ratios to MobileNetV2 x1.0. With ``reuse``, exports
    already under ``out_dir/models`` are timed again instead of being made anew.
    ``torch_threads``: PyTorch's intra-op threads while timing (:func:`host_threads`);
    ``clone_outputs``: time ExecuTorch with its bindings' output clones (with ``torch_threads=0``:
    the harness of the bindings' defaults, for comparison)."""
    names = list(dict.fromkeys(list(BASELINES) + list(models)))
    x = torch.rand(1, 3, *size, generator=torch.Generator().manual_seed(0))
    paths: Dict[Tuple[str, str], str] = {}
    for name in names:
        target = None
        label = target_name(name)
        for fmt in formats:
            path = export_path(label, fmt, size, osp.join(out_dir, 'models'))
            if reuse and osp.exists(path):
                paths[(name, fmt)] = path
                log(f'reusing {path}')
                continue
            if target is None:
                target = baseline_target(name, size) if name in BASELINES else build_target(name, size)
            result = export(target, fmt, osp.join(out_dir, 'models'), example=x)
            paths[(name, fmt)] = result.path
            log(f'exported {label} {fmt}: {result.summary()}')
    timings: List[Timing] = []
    for n_threads in threads:
        for fmt in formats:
            runners = {name: runtime_call(fmt, paths[(name, fmt)], x, n_threads, clone_outputs) for name in names}
            with host_threads(torch_threads):
                stats = time_interleaved(runners, seconds)
            for name, (median, p90, runs) in stats.items():
                timings.append(Timing(target_name(name), fmt, n_threads, median, p90, runs))
                log(f'{target_name(name):<22} {fmt:<16} {n_threads} thread(s): median {median:7.2f} ms  p90 {p90:7.2f} ms  ({runs} runs)')
    return set_ratios(timings)


def set_ratios(timings: List[Timing], reference: str = REFERENCE) -> List[Timing]:
    """Set each timing's ``ratio``: its median over ``reference``'s of the same format and
    thread count (timed in the same run). Raises a ValueError when a format and thread count
    has no timing of ``reference``."""
    medians = {(t.fmt, t.threads): t.median_ms for t in timings if t.model == reference}
    for t in timings:
        if (t.fmt, t.threads) not in medians:
            raise ValueError(f'no timing of {reference} at {t.fmt}, {t.threads} thread(s) to compare {t.model} with')
        t.ratio = t.median_ms / medians[(t.fmt, t.threads)]
    return timings


def format_table(timings: Sequence[Timing]) -> str:
    """A Markdown table: one row per model, a median / ratio column per format and thread count."""
    keys = list(dict.fromkeys((t.fmt, t.threads) for t in timings))
    models = list(dict.fromkeys(t.model for t in timings))
    by = {(t.model, t.fmt, t.threads): t for t in timings}
    head = '| model | top-1 | ' + ' | '.join(f'{f} {n}T ms (x MNv2)' for f, n in keys) + ' |'
    lines = [head, '|' + '---|' * (len(keys) + 2)]
    for m in models:
        cells = [f'{by[(m, f, n)].median_ms:.2f} ({by[(m, f, n)].ratio:.2f}x)' for f, n in keys]
        lines.append(f'| {m} | {top1(m) or "—"} | ' + ' | '.join(cells) + ' |')
    return '\n'.join(lines)


def benchmark_backbones(models: Sequence[str], size: Tuple[int, int], formats: Sequence[str], threads: Sequence[int],
                        seconds: float, out_dir: str, header: str, machine: str, log: Callable[[str], None] = print,
                        reuse: bool = False, torch_threads: Optional[int] = HOST_THREADS, clone_outputs: bool = False,
                        eager: bool = True) -> str:
    """:func:`run_benchmark`, then the table (with the eager comparison at 224 when ``eager``)
    in ``out_dir/benchmark.{md,json}`` and, at 224, the top-1 plot titled with ``machine``;
    returns the table."""
    from .eager import eager_comparison, format_eager_table
    from .plot import plot
    from .results import write_results
    timings = run_benchmark(models, size, formats, threads, seconds, out_dir, log=log, reuse=reuse,
                            torch_threads=torch_threads, clone_outputs=clone_outputs)
    table = format_table(timings)
    eager_timings = []
    if tuple(size) == (224, 224) and eager:
        eager_timings = eager_comparison(seconds=seconds, log=log)
        table += '\n\n' + format_eager_table(eager_timings)
    written = write_results(osp.join(out_dir, 'benchmark'), header, table,
                            dict(size=list(size), timings=[vars(t) for t in timings],
                                 eager=[vars(t) for t in eager_timings]))
    if tuple(size) == (224, 224):
        written.append(plot(timings, formats[0], 1, osp.join(out_dir, 'top1_vs_latency.png'), machine))
    log('written: ' + ', '.join(written))
    return table

