"""Latency of exported models beside MobileNetV2 and ResNet-18, measured in the same run.

Every model, ours and the torchvision baselines, is exported the same way (ExecuTorch with
XNNPACK fp32 and int8, and ONNX for onnxruntime) and timed the same way: warm-up runs, then
runs for a fixed time per model, reporting the median and 90th percentile, at 1 thread and
at all cores. The models of one format and thread count are timed interleaved (in rounds,
a slice of each model's time per round), so a slow spell of a shared machine falls on all
of them alike. Ratios are to MobileNetV2 x1.0 of the same run, format and thread count, so
they carry over between machines better than milliseconds do.

ExecuTorch is timed as an app runs it: outputs read in place (``clone_outputs=False``), with
PyTorch's own intra-op pool held at one thread (:func:`host_threads`). By default ExecuTorch's
Python bindings return every output as a ``clone`` made by PyTorch; with PyTorch's default
pool (all cores) the clone of a large feature map runs on OpenMP workers, which then
spin-wait and take the cores from XNNPACK's own thread pool. That made backbones with large
outputs (EfficientFormerV2-S0, EdgeViT-XXS: four feature maps) slower at 2 XNNPACK threads
than at 1 while MobileNetV2 (1000 logits) gained; a phone runs the C++ runtime, with no
PyTorch copies or pool beside it.

:func:`eager_comparison` times eager PyTorch forwards of our EfficientFormerV2 beside
timm's implementation (the same architecture, and the official one's forward), interleaved
the same way.
"""
from __future__ import annotations

import contextlib
import dataclasses
import os
import os.path as osp
import statistics
import time
from dataclasses import dataclass
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import torch
import torch.nn as nn

from ..fileio import atomic_path
from ..registry import FAMILIES, get_variant, variant_names, variants
from .convert import export, export_path
from .formats import get_format
from .targets import Target, build_target, target_name

#: torchvision baselines and their ImageNet top-1 (torchvision's published IMAGENET1K_V1 figures;
#: MobileNetV2 x1.4 from the MobileNetV2 paper, as quoted in PAPERS.md)
BASELINES = {'mobilenet_v2_x1.0': 71.878, 'mobilenet_v2_x1.4': 74.7, 'resnet18': 69.758}
REFERENCE = 'mobilenet_v2_x1.0'
#: colour and marker per registered family, in registration order
PLOT_STYLES = (('tab:blue', 'o'), ('tab:red', '^'), ('tab:green', 'D'), ('tab:purple', 'v'))


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
    from .formats import FORMATS
    return [name for name, fmt in FORMATS.items() if fmt.runner is not None]


def _call(fmt: str, path: str, x: torch.Tensor, threads: int, clone_outputs: bool = False) -> Callable[[], object]:
    # time the runtime, not the Python bindings' output clones (module docstring)
    run = get_format(fmt).runner(path, threads, clone_outputs=clone_outputs)
    return lambda: run(x)


#: run in a fresh interpreter by :func:`peak_memory_mb`: argv = fmt, path, shape, dtype, threads
_PEAK_SCRIPT = r"""
import json, resource, sys
import torch
from backbones.export.formats import get_format
fmt, path, shape, dtype, threads = sys.argv[1:]
x = torch.zeros([int(n) for n in shape.split('x')], dtype=getattr(torch, dtype))
runner = get_format(fmt).runner
if fmt.startswith('executorch'):
    from executorch.extension.pybindings import portable_lib  # noqa: F401 (its import is not the model's)
else:
    import onnxruntime  # noqa: F401

def status_kb(field):
    with open('/proc/self/status') as f:
        return next(int(line.split()[1]) for line in f if line.startswith(field + ':'))

def maxrss_kb():  # the process's peak so far: bytes on macOS, KiB on Linux
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // (1024 if sys.platform == 'darwin' else 1)

try:  # Linux: reset the high-water mark to the present, so that only this model's peak counts
    with open('/proc/self/clear_refs', 'w') as f:
        f.write('5')
    base, peak = status_kb('VmRSS'), lambda: status_kb('VmHWM')
except OSError:
    base, peak = maxrss_kb(), maxrss_kb
run = runner(path, int(threads), clone_outputs=False)
run(x)
peak = peak()
print(json.dumps({'base_kb': base, 'peak_kb': peak}))
"""


def peak_memory_mb(fmt: str, path: str, example: torch.Tensor, threads: int = 1) -> float:
    """What loading ``path`` and running it once on an input like ``example`` adds to a
    process's peak resident memory, in MB: measured in a fresh interpreter (the runtime
    imported first, so its own libraries do not count), as an app pays it on a phone. It
    includes the memory plan, the weights and the runtime's workspaces (XNNPACK's)."""
    import json
    import subprocess
    import sys
    root = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
    shape = 'x'.join(str(n) for n in example.shape)
    dtype = str(example.dtype).replace('torch.', '')
    done = subprocess.run([sys.executable, '-c', _PEAK_SCRIPT, fmt, path, shape, dtype, str(threads)],
                          capture_output=True, text=True, cwd=root,
                          env={**os.environ, 'PYTHONPATH': root + os.pathsep + os.environ.get('PYTHONPATH', '')})
    if done.returncode != 0:
        raise RuntimeError(f'measuring the memory of {path} failed:\n{done.stderr[-2000:]}')
    result = json.loads(done.stdout.strip().splitlines()[-1])
    return (result['peak_kb'] - result['base_kb']) * 1024 / 1e6


def run_benchmark(models: Sequence[str], size: Tuple[int, int], formats: Sequence[str], threads: Sequence[int],
                  seconds: float, out_dir: str, log: Callable[[str], None] = print,
                  reuse: bool = False, torch_threads: Optional[int] = HOST_THREADS,
                  clone_outputs: bool = False) -> List[Timing]:
    """Export and time ``models`` (backbone names, configs, or baseline names) plus the
    baselines; returns the timings with ratios to MobileNetV2 x1.0. With ``reuse``, exports
    already under ``out_dir/models`` are timed again instead of being made anew.
    ``torch_threads``: PyTorch's intra-op threads while timing (:func:`host_threads`);
    ``clone_outputs``: time ExecuTorch with its bindings' output clones (``torch_threads=0``
    and ``clone_outputs=True`` time as this benchmark did before it read outputs in place)."""
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
            log(f'exported {label} {fmt}: {result.size_bytes / 1e6:.1f} MB, '
                + (f'delegated {result.delegated_fraction:.1%}, ' if result.delegated_fraction is not None else '')
                + f'max rel diff {result.max_rel_diff:.1e}')
    timings: List[Timing] = []
    for n_threads in threads:
        for fmt in formats:
            runners = {name: _call(fmt, paths[(name, fmt)], x, n_threads, clone_outputs) for name in names}
            with host_threads(torch_threads):
                stats = time_interleaved(runners, seconds)
            for name, (median, p90, runs) in stats.items():
                timings.append(Timing(target_name(name), fmt, n_threads, median, p90, runs))
                log(f'{target_name(name):<22} {fmt:<16} {n_threads} thread(s): median {median:7.2f} ms  p90 {p90:7.2f} ms  ({runs} runs)')
    reference = {(t.fmt, t.threads): t.median_ms for t in timings if t.model == REFERENCE}
    for t in timings:
        t.ratio = t.median_ms / reference[(t.fmt, t.threads)]
    return timings


@dataclass
class EagerTiming:
    model: str
    batch: int
    threads: int
    ours_ms: float
    timm_ms: float

    @property
    def ratio(self) -> float:
        return self.ours_ms / self.timm_ms


def eager_comparison(names: Optional[Sequence[str]] = None, batch: int = 8, size: int = 224,
                     threads: Optional[int] = None, seconds: float = 2.0,
                     log: Callable[[str], None] = print) -> List[EagerTiming]:
    """Eager forward time (``torch.no_grad``, eval) of our backbones beside timm's
    ``forward_features`` of the same architecture and weights, for every variant whose family
    names a timm counterpart (``timm_model``; EfficientFormerV2), or the ``names`` given."""
    import timm
    previous = torch.get_num_threads()
    torch.set_num_threads(threads or os.cpu_count() or 1)
    x = torch.rand(batch, 3, size, size, generator=torch.Generator().manual_seed(0))
    chosen = [get_variant(n) for n in names] if names else [v for v in variants() if v.cls.timm_model]
    results = []
    try:
        for variant in chosen:
            reference = timm.create_model(variant.cls.timm_model.format(arch=variant.arch), pretrained=False,
                                          img_size=size).eval()
            ours = variant.cls(arch=variant.arch, **variant.cls.size_kwargs((size, size))).eval()
            ours.load_state_dict(reference.state_dict())
            with torch.no_grad():
                stats = time_interleaved({'ours': lambda: ours(x), 'timm': lambda: reference.forward_features(x)},
                                         seconds * 2, rounds=6)
            results.append(EagerTiming(variant.name, batch, torch.get_num_threads(), stats['ours'][0],
                                       stats['timm'][0]))
            r = results[-1]
            log(f'eager {r.model:<22} batch {batch}: ours {r.ours_ms:7.1f} ms  timm {r.timm_ms:7.1f} ms  '
                f'({r.ratio:.2f}x)')
    finally:
        torch.set_num_threads(previous)
    return results


def format_eager_table(timings: Sequence[EagerTiming], machine: str) -> str:
    lines = [f'Eager PyTorch forward, eval, no_grad, measured on {machine}.', '',
             '| model | batch | threads | ours ms | timm ms | ours / timm |', '|---|---|---|---|---|---|']
    for t in timings:
        lines.append(f'| {t.model} | {t.batch} | {t.threads} | {t.ours_ms:.1f} | {t.timm_ms:.1f} | {t.ratio:.2f} |')
    return '\n'.join(lines)


def top1(name: str) -> Optional[float]:
    """ImageNet top-1 (%) of a baseline or a variant as published; None when unknown."""
    if name in BASELINES:
        return BASELINES[name]
    if name in variant_names():
        value = get_variant(name).imagenet.get('top1')
        return float(value) if value else None
    return None


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
        if t.model in BASELINES:
            color, marker, label, offset = 'tab:gray', 's', t.model, (4, 3)
        else:
            variant = get_variant(t.model)
            index = list(FAMILIES).index(variant.family)
            color, marker = PLOT_STYLES[index % len(PLOT_STYLES)]
            label, offset = variant.label, (4, -10) if index % 2 == 0 else (4, 3)
        ax.scatter(t.median_ms, top1(t.model), c=color, marker=marker, s=40)
        ax.annotate(label, (t.median_ms, top1(t.model)), textcoords='offset points', xytext=offset, fontsize=8)
    ax.set_xlabel(f'latency, ms ({fmt}, {threads} thread{"s" if threads > 1 else ""}, median)')
    ax.set_ylabel('ImageNet top-1 (%)')
    ax.set_title(f'Accuracy vs measured latency at 224x224\n{machine}', fontsize=9)
    ax.grid(alpha=0.3)
    ax.margins(x=0.15, y=0.1)  # room for the labels of the outermost points
    fig.tight_layout()
    with atomic_path(path) as tmp:  # keeps the suffix, from which matplotlib takes the format
        fig.savefig(tmp, dpi=120)
    plt.close(fig)
    return path


def machine_description(cpuinfo: str = '/proc/cpuinfo') -> str:
    """``'AMD EPYC (family 26, model 2, AVX-512), 2 cores, torch 2.13.0'``: the CPU's name,
    and on x86 its family and model and widest vector extension, since one marketing name
    covers several generations whose ratios differ (the 1-thread ratios to MobileNetV2 did)."""
    import platform
    cpu = platform.processor() or platform.machine()
    fields: Dict[str, str] = {}
    try:
        with open(cpuinfo) as f:
            for line in f:
                if not line.strip():
                    break  # the first processor's block is enough
                key, _, value = line.partition(':')
                fields.setdefault(key.strip(), value.strip())
    except OSError:
        pass
    cpu = fields.get('model name', cpu)
    flags = set(fields.get('flags', fields.get('Features', '')).split())
    vector = next((name for flag, name in (('avx512f', 'AVX-512'), ('avx2', 'AVX2'), ('sve', 'SVE'),
                                           ('asimd', 'NEON')) if flag in flags), None)
    details = [f'family {fields["cpu family"]}, model {fields["model"]}'] if 'cpu family' in fields else []
    details += [vector] if vector else []
    if details:
        cpu += f' ({", ".join(details)})'
    return f'{cpu}, {os.cpu_count()} cores, torch {torch.__version__.split("+")[0]}'


# ---------------------------------------------------------------------------- end to end
@dataclass
class EndToEndTiming:
    """One detector / segmentor timed as its raw network (float NCHW in, head tensors out)
    and end to end (uint8 image in; decoding, NMS or argmax in the graph)."""
    model: str
    kind: str
    fmt: str
    threads: int
    size: Tuple[int, int]
    raw_ms: float
    end_to_end_ms: float
    runs: int
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
    from .contract import end_to_end
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
            log(f'exported {label} {variant} {fmt}: {result.size_bytes / 1e6:.1f} MB, '
                + (f'delegated {result.delegated_fraction:.1%}, ' if result.delegated_fraction is not None else '')
                + (f'memory plan {result.planned_bytes / 1e6:.0f} MB, ' if result.planned_bytes is not None else '')
                + f'max rel diff {result.max_rel_diff:.1e}, export {result.seconds:.0f} s')
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
            runners = {'raw': _call(fmt, paths['raw'], x, n_threads),
                       'end_to_end': _call(fmt, paths['end_to_end'], image, n_threads)}
            with host_threads(torch_threads):
                stats = time_interleaved(runners, seconds * 2)
            t = EndToEndTiming(label, kind, fmt, n_threads, tuple(size), stats['raw'][0],
                               stats['end_to_end'][0], min(stats['raw'][2], stats['end_to_end'][2]),
                               raw_peak_mb=peaks['raw'], end_to_end_peak_mb=peaks['end_to_end'])
            del runners  # an end-to-end Mask R-CNN at 640x640 takes over 1 GB: free it first
            if 'heads' in paths:
                t.delegated_post_ms = time_interleaved({'heads': _call(fmt, paths['heads'], heads_input, n_threads)},
                                                       seconds)['heads'][0]
            results.append(t)
            log(f'{label:<48} {n_threads}T raw {t.raw_ms:8.2f} ms  end to end {t.end_to_end_ms:8.2f} ms  '
                f'post-processing {t.post_ms:7.2f} ms ({t.post_share:.1%})'
                + (f', of which besides the RoI heads {t.other_post_ms:7.2f} ms ({t.other_post_share:.1%} of '
                   f'end to end; RoI heads {t.delegated_post_ms:.2f} ms)' if t.delegated_post_ms is not None else ''))
    return results


class RoIHeads(nn.Module):
    """The box head on the proposals' and the mask head on the detections' RoI features, as
    the end-to-end Mask R-CNN runs them (the part of its post-processing XNNPACK delegates)."""

    def __init__(self, post: nn.Module) -> None:
        super().__init__()
        self.bbox_head = post.bbox_head
        self.mask_head = post.mask_head
        self.shapes = ((post.rpn.count, post.bbox_head.in_channels, *post.bbox_roi.output_size),
                       (post.max_per_img, post.mask_head.in_channels, *post.mask_roi.output_size))

    def example(self) -> torch.Tensor:
        n = sum(int(torch.Size(s).numel()) for s in self.shapes)
        return torch.rand(n, generator=torch.Generator().manual_seed(0))

    def forward(self, x: torch.Tensor):
        n = int(torch.Size(self.shapes[0]).numel())
        cls_score, bbox_pred = self.bbox_head(x[:n].reshape(self.shapes[0]))
        return cls_score, bbox_pred, self.mask_head(x[n:].reshape(self.shapes[1]))


def _mb(value: Optional[float]) -> str:
    return '—' if value is None else f'{value:.0f}'


def format_end_to_end_table(timings: Sequence[EndToEndTiming], machine: str) -> str:
    lines = [f'End-to-end exports against their raw networks, median latency, measured on {machine}. '
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
