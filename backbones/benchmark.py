"""Latency of exported models beside MobileNetV2 and ResNet-18, measured in the same run.

Every model, ours and the torchvision baselines, is exported the same way (ExecuTorch with
XNNPACK fp32 and int8, and ONNX for onnxruntime) and timed the same way: warm-up runs, then
repeated runs for a fixed time, reporting the median and 90th percentile, at 1 thread and at
all cores. Ratios are to MobileNetV2 x1.0 of the same run, format and thread count, so they
carry over between machines better than milliseconds do.
"""
from __future__ import annotations

import os
import os.path as osp
import statistics
import time
from dataclasses import dataclass
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import torch

from .export import Target, build_target, export
from .zoo import IMAGENET

BACKBONES = ('edgevit_xxs', 'edgevit_xs', 'edgevit_s', 'efficientformerv2_s0', 'efficientformerv2_s1',
             'efficientformerv2_s2', 'efficientformerv2_l')
#: torchvision baselines and their ImageNet top-1 (torchvision's published IMAGENET1K_V1 figures;
#: MobileNetV2 x1.4 from the MobileNetV2 paper, as quoted in PAPERS.md)
BASELINES = {'mobilenet_v2_x1.0': 71.878, 'mobilenet_v2_x1.4': 74.7, 'resnet18': 69.758}
REFERENCE = 'mobilenet_v2_x1.0'


def baseline_target(name: str, size: Tuple[int, int]) -> Target:
    import torchvision
    if name == 'mobilenet_v2_x1.0':
        model = torchvision.models.mobilenet_v2(width_mult=1.0)
    elif name == 'mobilenet_v2_x1.4':
        model = torchvision.models.mobilenet_v2(width_mult=1.4)
    elif name == 'resnet18':
        model = torchvision.models.resnet18()
    else:
        raise ValueError(f'unknown baseline {name!r}; choose from {list(BASELINES)}')
    return Target(name, model.eval(), tuple(size), kind='baseline')


@dataclass
class Timing:
    model: str
    fmt: str
    threads: int
    median_ms: float
    p90_ms: float
    runs: int
    ratio: Optional[float] = None


def time_callable(fn: Callable[[], object], seconds: float, warmup: int = 5) -> Tuple[float, float, int]:
    """Median and p90 latency (ms) of ``fn`` over ``seconds`` after ``warmup`` calls."""
    for _ in range(warmup):
        fn()
    times: List[float] = []
    start = time.perf_counter()
    while time.perf_counter() - start < seconds or len(times) < 5:
        t = time.perf_counter()
        fn()
        times.append((time.perf_counter() - t) * 1e3)
    times.sort()
    return statistics.median(times), times[min(len(times) - 1, int(0.9 * len(times)))], len(times)


def executorch_runner(path: str, x: torch.Tensor, threads: int) -> Callable[[], object]:
    from executorch.extension.pybindings import portable_lib
    portable_lib._unsafe_reset_threadpool(threads)
    module = portable_lib._load_for_executorch(path)
    return lambda: module.forward((x,))


def onnx_runner(path: str, x: torch.Tensor, threads: int) -> Callable[[], object]:
    import onnxruntime as ort
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    session = ort.InferenceSession(path, options, providers=['CPUExecutionProvider'])
    feed = {session.get_inputs()[0].name: x.numpy()}
    return lambda: session.run(None, feed)


RUNTIMES = {'executorch': executorch_runner, 'executorch-int8': executorch_runner, 'onnx': onnx_runner}


def run_benchmark(models: Sequence[str], size: Tuple[int, int], formats: Sequence[str], threads: Sequence[int],
                  seconds: float, out_dir: str, log: Callable[[str], None] = print) -> List[Timing]:
    """Export and time ``models`` (backbone names, configs, or baseline names) plus the
    baselines; returns the timings with ratios to MobileNetV2 x1.0."""
    names = list(dict.fromkeys(list(BASELINES) + list(models)))
    x = torch.rand(1, 3, *size, generator=torch.Generator().manual_seed(0))
    paths: Dict[Tuple[str, str], str] = {}
    for name in names:
        target = baseline_target(name, size) if name in BASELINES else build_target(name, size)
        for fmt in formats:
            result = export(target, fmt, osp.join(out_dir, 'models'), example=x)
            paths[(name, fmt)] = result.path
            log(f'exported {name} {fmt}: {result.size_bytes / 1e6:.1f} MB, '
                + (f'delegated {result.delegated_fraction:.1%}, ' if result.delegated_fraction is not None else '')
                + f'max rel diff {result.max_rel_diff:.1e}')
    timings: List[Timing] = []
    for n_threads in threads:
        for fmt in formats:
            for name in names:
                run = RUNTIMES[fmt](paths[(name, fmt)], x, n_threads)
                median, p90, runs = time_callable(run, seconds)
                timings.append(Timing(name, fmt, n_threads, median, p90, runs))
                log(f'{name:<22} {fmt:<16} {n_threads} thread(s): median {median:7.2f} ms  p90 {p90:7.2f} ms  ({runs} runs)')
    reference = {(t.fmt, t.threads): t.median_ms for t in timings if t.model == REFERENCE}
    for t in timings:
        t.ratio = t.median_ms / reference[(t.fmt, t.threads)]
    return timings


def top1(name: str) -> Optional[float]:
    if name in BASELINES:
        return BASELINES[name]
    return float(IMAGENET[name]['top1']) if name in IMAGENET else None


def format_table(timings: Sequence[Timing], machine: str) -> str:
    """A Markdown table: one row per model, a median / ratio column per format and thread count."""
    keys = list(dict.fromkeys((t.fmt, t.threads) for t in timings))
    models = list(dict.fromkeys(t.model for t in timings))
    by = {(t.model, t.fmt, t.threads): t for t in timings}
    head = '| model | top-1 | ' + ' | '.join(f'{f} {n}T ms (x MNv2)' for f, n in keys) + ' |'
    lines = [f'Measured on {machine}.', '', head, '|' + '---|' * (len(keys) + 2)]
    for m in models:
        cells = [f'{by[(m, f, n)].median_ms:.2f} ({by[(m, f, n)].ratio:.2f}x)' for f, n in keys]
        lines.append(f'| {m} | {top1(m) or "—"} | ' + ' | '.join(cells) + ' |')
    return '\n'.join(lines)


def plot(timings: Sequence[Timing], fmt: str, threads: int, path: str, machine: str) -> str:
    """ImageNet top-1 (papers / torchvision) against measured latency, one point per model."""
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for t in timings:
        if t.fmt != fmt or t.threads != threads or top1(t.model) is None:
            continue
        family = 'baseline' if t.model in BASELINES else t.model.split('_')[0]
        style = {'baseline': ('tab:gray', 's'), 'edgevit': ('tab:blue', 'o'), 'efficientformerv2': ('tab:red', '^')}
        color, marker = style.get(family, ('k', 'x'))
        ax.scatter(t.median_ms, top1(t.model), c=color, marker=marker, s=40)
        ax.annotate(t.model.replace('efficientformerv2', 'EFv2').replace('edgevit', 'EdgeViT'),
                    (t.median_ms, top1(t.model)), textcoords='offset points', xytext=(4, 3), fontsize=8)
    ax.set_xlabel(f'latency, ms ({fmt}, {threads} thread{"s" if threads > 1 else ""}, median)')
    ax.set_ylabel('ImageNet top-1 (%)')
    ax.set_title(f'Accuracy vs measured latency at 224x224\n{machine}', fontsize=9)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    os.makedirs(osp.dirname(osp.abspath(path)), exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def machine_description() -> str:
    import platform
    cpu = platform.processor() or platform.machine()
    try:
        with open('/proc/cpuinfo') as f:
            for line in f:
                if line.startswith('model name'):
                    cpu = line.split(':', 1)[1].strip()
                    break
    except OSError:
        pass
    return f'{cpu}, {os.cpu_count()} cores, torch {torch.__version__.split("+")[0]}'
