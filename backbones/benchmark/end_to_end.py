"""Detector and segmentor exports timed end to end beside their raw networks.

The difference is what the in-graph input conversion and post-processing cost. For Mask
R-CNN the box and mask heads, the part of its post-processing XNNPACK runs, are exported and
timed alone too; and every export's peak memory is measured in a fresh process.
"""
from __future__ import annotations

import dataclasses
import os.path as osp
from dataclasses import dataclass
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import torch

from ..export.contract import end_to_end
from ..export.convert import export, export_path
from ..export.targets import Target, build_target, target_name
from ..export.two_stage import RoIHeads
from .memory import peak_memory_mb
from .timing import HOST_THREADS, host_threads, runtime_call, time_interleaved


@dataclass
class EndToEndTiming:
    """One detector / segmentor timed as its raw network (float NCHW in, head tensors out)
    and end to end (uint8 image in; decoding, NMS or argmax in the graph)."""
    model: str  # the config's name, with the cfg-options it was built with
    kind: str  # the target kind: 'retinanet', 'two-stage' or 'segmentor'
    fmt: str
    threads: int
    size: Tuple[int, int]
    raw_ms: float  # median latency of the raw network
    end_to_end_ms: float  # median latency of the end-to-end graph
    runs: int  # timed runs of each (the fewer of the two)
    #: Mask R-CNN: the part of the post-processing XNNPACK runs (the box and mask heads on
    #: their fixed RoI counts, exported and timed alone); None for the others (no such part)
    delegated_post_ms: Optional[float] = None
    #: what loading and running each export once adds to a fresh process's peak resident
    #: memory, MB, at 1 thread (:func:`peak_memory_mb`)
    raw_peak_mb: Optional[float] = None
    end_to_end_peak_mb: Optional[float] = None

    @property
    def post_ms(self) -> float:
        """What the end-to-end graph adds: input conversion and post-processing."""
        return self.end_to_end_ms - self.raw_ms

    @property
    def post_share(self) -> float:
        return self.post_ms / self.end_to_end_ms

    @property
    def other_post_ms(self) -> float:
        """What the graph adds less the RoI heads: decoding, top-k, NMS, RoIAlign, mask
        pasting. Mostly ExecuTorch's portable kernels, not only: in ExecuTorch exports the
        RoIAlign's per-cell multiply-adds are XNNPACK calls (``two_stage.gathers_per_cell``)."""
        return self.post_ms - (self.delegated_post_ms or 0.0)

    @property
    def other_post_share(self) -> float:
        return self.other_post_ms / self.end_to_end_ms


def options_label(cfg_options: Optional[Dict[str, object]]) -> str:
    """What a name gains from config overrides: ``'@rpn.max_per_img=300,rcnn.max_per_img=20'``
    (the last two parts of each key), ``''`` without any."""
    if not cfg_options:
        return ''
    return '@' + ','.join(f'{".".join(key.split(".")[-2:])}={value}' for key, value in cfg_options.items())


def run_end_to_end_benchmark(configs: Sequence[str], size: Tuple[int, int], fmt: str, threads: Sequence[int],
                             seconds: float, out_dir: str, log: Callable[[str], None] = print,
                             reuse: bool = False, torch_threads: Optional[int] = HOST_THREADS,
                             cfg_options: Optional[Dict[str, object]] = None) -> List[EndToEndTiming]:
    """Export each config (RetinaNet, Mask R-CNN or Semantic FPN) raw and end to end to
    ``fmt`` at ``size`` and time the two interleaved: the difference is the cost of the
    in-graph input conversion and post-processing. ``cfg_options`` (as ``--cfg-options``)
    are merged into every config; the models' names and files carry them."""
    x = torch.rand(1, 3, *size, generator=torch.Generator().manual_seed(0))
    image = torch.randint(0, 256, (1, *size, 3), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    results: List[EndToEndTiming] = []
    for config in configs:
        label = target_name(config) + options_label(cfg_options)
        # its kind, and the model to export (named with the options: its files are other files)
        target = dataclasses.replace(build_target(config, size, cfg_options=cfg_options), name=label)
        kind, paths, e2e = target.kind, {}, None
        for variant, example in (('raw', x), ('end_to_end', image)):
            folder = osp.join(out_dir, 'models', variant)
            path = export_path(label, fmt, size, folder)
            if reuse and osp.exists(path):
                paths[variant] = path
                log(f'reusing {path}')
                continue
            if variant == 'end_to_end':
                e2e = end_to_end(target, config=config, cfg_options=cfg_options)
            result = export(target if variant == 'raw' else e2e, fmt, folder, example=example)
            paths[variant] = result.path
            log(f'exported {label} {variant} {fmt}: {result.summary()}')
        if kind == 'two-stage':
            # the box and mask heads run on XNNPACK inside the end-to-end graph: timed alone
            folder = osp.join(out_dir, 'models', 'end_to_end')
            if e2e is None:  # its export was reused
                e2e = end_to_end(target, config=config, cfg_options=cfg_options)
            heads = RoIHeads(e2e.module.post).eval()
            heads_input = heads.example()
            path = export_path(f'{label}_roi_heads', fmt, size, folder)
            if not (reuse and osp.exists(path)):
                path = export(Target(f'{label}_roi_heads', heads, tuple(size)), fmt, folder, example=heads_input).path
            paths['heads'] = path
            del heads
        del target, e2e  # the eager models are not needed for timing
        peaks = {variant: peak_memory_mb(fmt, paths[variant], example)
                 for variant, example in (('raw', x), ('end_to_end', image))}
        log(f'{label}: peak memory of one run, raw {peaks["raw"]:.0f} MB, end to end {peaks["end_to_end"]:.0f} MB')
        for n_threads in threads:
            runners = {'raw': runtime_call(fmt, paths['raw'], x, n_threads),
                       'end_to_end': runtime_call(fmt, paths['end_to_end'], image, n_threads)}
            with host_threads(torch_threads):
                stats = time_interleaved(runners, seconds * 2)
            t = EndToEndTiming(label, kind, fmt, n_threads, tuple(size), stats['raw'][0],
                               stats['end_to_end'][0], min(stats['raw'][2], stats['end_to_end'][2]),
                               raw_peak_mb=peaks['raw'], end_to_end_peak_mb=peaks['end_to_end'])
            del runners  # a loaded end-to-end Mask R-CNN holds its memory plan: free it first
            if 'heads' in paths:
                t.delegated_post_ms = time_interleaved({'heads': runtime_call(fmt, paths['heads'], heads_input, n_threads)},
                                                       seconds)['heads'][0]
            results.append(t)
            log(f'{label:<48} {n_threads}T raw {t.raw_ms:8.2f} ms  end to end {t.end_to_end_ms:8.2f} ms  '
                f'post-processing {t.post_ms:7.2f} ms ({t.post_share:.1%})'
                + (f', of which besides the RoI heads {t.other_post_ms:7.2f} ms ({t.other_post_share:.1%} of '
                   f'end to end; RoI heads {t.delegated_post_ms:.2f} ms)' if t.delegated_post_ms is not None else ''))
    return results


def _mb(value: Optional[float]) -> str:
    return '—' if value is None else f'{value:.0f}'


def format_end_to_end_table(timings: Sequence[EndToEndTiming]) -> str:
    lines = ['End-to-end exports against their raw networks, median latency. '
             'Besides RoI heads: the post-processing less Mask R-CNN\'s box and mask heads (exported '
             'and timed alone): decoding, NMS, RoIAlign, mask pasting. Peak memory: what loading and running '
             'the export once adds to a fresh process\'s peak resident memory (1 thread).', '',
             '| model | size | format | threads | raw ms | end to end ms | post-processing ms | share | '
             'besides RoI heads ms | share | peak memory MB, raw / end to end |',
             '|---|---|---|---|---|---|---|---|---|---|---|']
    for t in timings:
        lines.append(f'| {t.model} | {t.size[0]}x{t.size[1]} | {t.fmt} | {t.threads} | {t.raw_ms:.2f} | '
                     f'{t.end_to_end_ms:.2f} | {t.post_ms:.2f} | {t.post_share:.1%} | '
                     f'{t.other_post_ms:.2f} | {t.other_post_share:.1%} | {_mb(t.raw_peak_mb)} / '
                     f'{_mb(t.end_to_end_peak_mb)} |')
    return '\n'.join(lines)


def benchmark_configs(jobs: Sequence[Tuple[str, Tuple[int, int]]], fmt: str, threads: Sequence[int], seconds: float,
                      out_dir: str, header: str, log: Callable[[str], None] = print, reuse: bool = False,
                      torch_threads: Optional[int] = HOST_THREADS,
                      cfg_options: Optional[Dict[str, object]] = None) -> str:
    """:func:`run_end_to_end_benchmark` for each ``(config, size)``, written to
    ``out_dir/end_to_end.{md,json}``; returns the table."""
    from .results import write_results
    timings: List[EndToEndTiming] = []
    for config, size in jobs:
        timings += run_end_to_end_benchmark([config], size, fmt, threads, seconds, out_dir, log=log, reuse=reuse,
                                            torch_threads=torch_threads, cfg_options=cfg_options)
    table = format_end_to_end_table(timings)
    data = dict(timings=[dict(vars(t), post_ms=t.post_ms, post_share=t.post_share, other_post_ms=t.other_post_ms,
                              other_post_share=t.other_post_share) for t in timings])
    log('written: ' + ', '.join(write_results(osp.join(out_dir, 'end_to_end'), header, table, data)))
    return table

