"""Timing exported models the way an app runs them.

Every model is timed the same way: warm-up runs, then runs for a fixed time per model,
reporting the median and 90th percentile. Models compared with each other are timed
interleaved (in rounds, a slice of each model's time per round), so a slow spell of a shared
machine falls on all of them alike.

ExecuTorch is timed as an app runs it: outputs read in place (``clone_outputs=False``), with
PyTorch's own intra-op pool held at one thread (:func:`host_threads`). ExecuTorch's Python
bindings otherwise return every output as a ``clone`` made by PyTorch; with PyTorch's default
pool (all cores) the clone of a large feature map runs on OpenMP workers, which then spin-wait
and take the cores from XNNPACK's own thread pool. A phone runs the C++ runtime, with no
PyTorch copies or pool beside it.
"""
from __future__ import annotations

import contextlib
import statistics
import time
from typing import Callable, Dict, List, Optional, Tuple

import torch

from ..export.formats import FORMATS, get_format


def time_callable(fn: Callable[[], object], seconds: float, warmup: int = 5) -> Tuple[float, float, int]:
    """Median and p90 latency (ms) of ``fn`` over ``seconds`` after ``warmup`` calls (at least
    five runs)."""
    return time_interleaved({'fn': fn}, seconds, rounds=5, warmup=warmup)['fn']


def time_interleaved(fns: Dict[str, Callable[[], object]], seconds: float, rounds: int = 10,
                     warmup: int = 3) -> Dict[str, Tuple[float, float, int]]:
    """Median, p90 (ms) and run count of each callable, timed in ``rounds`` interleaved
    rounds of ``seconds / rounds`` each (at least one run per model and round)."""
    samples: Dict[str, List[float]] = {name: [] for name in fns}
    for fn in fns.values():
        for _ in range(warmup):
            fn()
    for _ in range(rounds):
        for name, fn in fns.items():
            start = time.perf_counter()
            while True:
                t = time.perf_counter()
                fn()
                samples[name].append((time.perf_counter() - t) * 1e3)
                if time.perf_counter() - start >= seconds / rounds:
                    break
    out = {}
    for name, times in samples.items():
        times.sort()
        out[name] = (statistics.median(times), times[min(len(times) - 1, int(0.9 * len(times)))], len(times))
    return out


#: PyTorch intra-op threads while a runtime is timed (see the module docstring)
HOST_THREADS = 1


@contextlib.contextmanager
def host_threads(threads: Optional[int] = HOST_THREADS):
    """Hold PyTorch's intra-op pool at ``threads`` (None or 0: leave it as it is) while an
    exported model is timed, and restore it after."""
    previous = torch.get_num_threads()
    if threads:
        torch.set_num_threads(threads)
    try:
        yield
    finally:
        if threads:
            torch.set_num_threads(previous)


def timed_formats():
    """The formats this machine can run, hence time."""
    return [name for name, fmt in FORMATS.items() if fmt.runner is not None]


def runtime_call(fmt: str, path: str, x: torch.Tensor, threads: int,
                 clone_outputs: bool = False) -> Callable[[], object]:
    """One run of the export at ``path`` on ``x``, as a callable to time: the runtime, not the
    Python bindings' output clones (module docstring)."""
    run = get_format(fmt).runner(path, threads, clone_outputs=clone_outputs)
    return lambda: run(x)
