"""Per-operator profiles of ONNX exports with ONNX Runtime's own profiler.

ONNX Runtime records every node's kernel time when ``SessionOptions.enable_profiling`` is
set (a Chrome-trace JSON file). :func:`profile_onnx` runs an export on random inputs of its
declared types and shapes (a uint8 image for end-to-end models), drops the first runs
(allocation and kernel selection), and sums the node times of the rest by operator type and
by node, with their input shapes. It works on any ``.onnx`` file, end-to-end detectors
included, where the operator-by-operator ExecuTorch profile
(:mod:`backbones.benchmark.operators`) covers backbones only.
"""
from __future__ import annotations

import json
import os
import tempfile
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Callable, Dict, List, Optional, Sequence

import numpy as np

_NUMPY_TYPES = {'tensor(float)': np.float32, 'tensor(uint8)': np.uint8, 'tensor(int64)': np.int64,
                'tensor(int32)': np.int32, 'tensor(double)': np.float64}


@dataclass
class NodeTime:
    name: str
    op_type: str
    ms: float                    # per run
    inputs: List[str] = field(default_factory=list)   # input shapes, as ONNX Runtime reports them


@dataclass
class OnnxProfile:
    path: str
    run_ms: List[float]          # each counted run (after the warm-up), whole-model
    nodes: List[NodeTime]        # by time, slowest first

    @property
    def runs(self) -> int:
        return len(self.run_ms)

    @property
    def node_ms(self) -> float:
        return sum(n.ms for n in self.nodes)

    def by_op_type(self) -> Dict[str, float]:
        groups: Dict[str, float] = defaultdict(float)
        for n in self.nodes:
            groups[n.op_type] += n.ms
        return dict(sorted(groups.items(), key=lambda kv: -kv[1]))


def random_inputs(session, seed: int = 0) -> Dict[str, np.ndarray]:
    """Random inputs of the session's declared types and (fixed) shapes."""
    rng = np.random.default_rng(seed)
    feeds = {}
    for arg in session.get_inputs():
        if arg.type not in _NUMPY_TYPES:
            raise ValueError(f'{arg.name}: input type {arg.type} is not supported by the profiler')
        if not all(isinstance(d, int) for d in arg.shape):
            raise ValueError(f'{arg.name}: shape {arg.shape} is not fixed; profile an export of a fixed size')
        dtype = _NUMPY_TYPES[arg.type]
        if np.issubdtype(dtype, np.floating):
            feeds[arg.name] = rng.standard_normal(arg.shape).astype(dtype)
        else:
            feeds[arg.name] = rng.integers(0, 256 if dtype == np.uint8 else 2, size=arg.shape).astype(dtype)
    return feeds


def profile_onnx(path: str, runs: int = 5, warmup: int = 2, threads: Optional[int] = None) -> OnnxProfile:
    """Run the ONNX model at ``path`` ``warmup + runs`` times with ONNX Runtime's profiler
    on (``threads``: intra-op threads, default the runtime's) and return the node times of
    the last ``runs`` runs, per run."""
    from ..export.runner import onnx_session
    if runs < 1 or warmup < 0:
        raise ValueError(f'runs must be >= 1 and warmup >= 0, got runs={runs}, warmup={warmup}')
    with tempfile.TemporaryDirectory(prefix='onnx_profile_') as tmp:
        session = onnx_session(path, threads, profile_prefix=os.path.join(tmp, 'trace'))
        feeds = random_inputs(session)
        for _ in range(warmup + runs):
            session.run(None, feeds)
        with open(session.end_profiling()) as f:
            events = json.load(f)
    model_runs = sorted((e for e in events if e.get('name') == 'model_run'), key=lambda e: e['ts'])
    counted = model_runs[warmup:]
    if len(counted) != runs:
        raise RuntimeError(f'{path}: ONNX Runtime recorded {len(model_runs)} model runs, expected {warmup + runs}; '
                           'its profile format may have changed')
    spans = [(e['ts'], e['ts'] + e['dur']) for e in counted]
    totals: Dict[str, float] = defaultdict(float)
    meta: Dict[str, NodeTime] = {}
    for e in events:
        if e.get('cat') != 'Node' or not e.get('name', '').endswith('_kernel_time'):
            continue
        if not any(lo <= e['ts'] <= hi for lo, hi in spans):
            continue
        name = e['name'][:-len('_kernel_time')]
        totals[name] += e['dur'] / 1e3
        if name not in meta:
            args = e.get('args', {})
            shapes = [str(next(iter(s.values()))) for s in args.get('input_type_shape', []) if s]
            meta[name] = NodeTime(name, args.get('op_name', '?'), 0.0, shapes)
    nodes = []
    for name, ms in totals.items():
        node = meta[name]
        node.ms = ms / len(counted)
        nodes.append(node)
    nodes.sort(key=lambda n: -n.ms)
    return OnnxProfile(path, [e['dur'] / 1e3 for e in counted], nodes)


def format_onnx_profile(p: OnnxProfile, top: int = 15, threads: Optional[int] = None) -> str:
    """Markdown: whole-model time, the operator types by time with their share of the node
    time, and the ``top`` slowest nodes with their input shapes."""
    total = p.node_ms or float('nan')
    runs = ', '.join(f'{ms:.1f}' for ms in p.run_ms)
    lines = [f'ONNX Runtime profile of `{os.path.basename(p.path)}` ({p.runs} runs after the warm-up: {runs} ms'
             f'; {threads or "default"} threads).', '',
             '| operator type | ms / run | share of node time |', '|---|---|---|']
    lines += [f'| {op} | {ms:.1f} | {100 * ms / total:.1f}% |' for op, ms in p.by_op_type().items()]
    groups = by_op_and_shapes(p)
    lines += ['', f'Operator type and input shapes, summed over the nodes that share them (slowest {min(top, len(groups))} '
              f'of {len(groups)}):', '', '| type | nodes | ms / run | share | input shapes |', '|---|---|---|---|---|']
    lines += [f'| {g["op_type"]} | {g["count"]} | {g["ms"]:.1f} | {100 * g["ms"] / total:.1f}% | {"; ".join(g["inputs"])} |'
              for g in groups[:top]]
    lines += ['', f'Slowest {min(top, len(p.nodes))} of {len(p.nodes)} nodes:', '',
              '| node | type | ms / run | share | input shapes |', '|---|---|---|---|---|']
    lines += [f'| {n.name} | {n.op_type} | {n.ms:.1f} | {100 * n.ms / total:.1f}% | {"; ".join(n.inputs)} |'
              for n in p.nodes[:top]]
    return '\n'.join(lines)


def by_op_and_shapes(p: OnnxProfile) -> List[dict]:
    """Node times summed over nodes of the same operator type and input shapes (the repeated
    steps of a graph, such as one gather per RoIAlign sample), slowest first."""
    groups: Dict[tuple, dict] = {}
    for n in p.nodes:
        g = groups.setdefault((n.op_type, tuple(n.inputs)), dict(op_type=n.op_type, inputs=n.inputs, count=0, ms=0.0))
        g['count'] += 1
        g['ms'] += n.ms
    return sorted(groups.values(), key=lambda g: -g['ms'])


def onnx_profile_json(p: OnnxProfile, top: int = 100) -> dict:
    """The profile as JSON: per operator type, per operator type and input shapes, and the
    ``top`` slowest nodes (a detector has thousands)."""
    return dict(path=p.path, runs=p.runs, run_ms=p.run_ms, node_count=len(p.nodes), node_ms=p.node_ms,
                by_op_type=p.by_op_type(), by_op_and_shapes=by_op_and_shapes(p),
                nodes=[dict(name=n.name, op_type=n.op_type, ms=n.ms, inputs=n.inputs) for n in p.nodes[:top]])


def report_names(paths: Sequence[str]) -> List[str]:
    """A report name per ONNX file: its stem, or ``FOLDER_STEM`` where two files share a stem.
    Raises a ValueError when two files share their folder's name too (the reports would
    overwrite each other)."""
    names = [os.path.splitext(os.path.basename(path))[0] for path in paths]
    if len(set(names)) < len(names):
        names = [f'{os.path.basename(os.path.dirname(os.path.abspath(path)))}_{name}'
                 for path, name in zip(paths, names)]
        if len(set(names)) < len(names):
            raise ValueError('--profile-onnx: two files share a name and a folder name, so their reports would '
                             'overwrite each other; profile them one at a time with separate --results-dir')
    return names


def profile_files(paths: Sequence[str], results_dir: str, header: str, runs: int = 5, threads: Optional[int] = None,
                  log: Callable[[str], None] = print) -> None:
    """Profile each ONNX file and write ``results_dir/onnx_profile_NAME.{md,json}``."""
    from .results import write_results
    for path in paths:
        if not path.endswith('.onnx') or not os.path.isfile(path):
            raise ValueError(f'--profile-onnx {path}: not an .onnx file; export one with tools/export.py '
                             '--formats onnx (or the main job)')
    for path, name in zip(paths, report_names(paths)):
        profile = profile_onnx(path, runs=runs, threads=threads)
        report = format_onnx_profile(profile, threads=threads)
        log('\n' + report)
        written = write_results(os.path.join(results_dir, 'onnx_profile_' + name), header, report,
                                onnx_profile_json(profile))
        log('written: ' + ', '.join(written))

