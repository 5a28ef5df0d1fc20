"""Per-operator profiles of ExecuTorch XNNPACK exports, at several thread counts.

ExecuTorch's own profiler (ETDump events read by ``executorch.devtools.Inspector``) needs a
runtime built with the event tracer (CMake ``EXECUTORCH_ENABLE_EVENT_TRACER``, plus
``EXECUTORCH_XNNPACK_ENABLE_PROFILING`` for events inside an XNNPACK delegate). The pip
wheels are built without it: ``write_etdump_result_to_file`` finds no data
(:func:`etdump_available` checks this build). So this module profiles with the runtime as
installed, operator by operator:

1. the model is lowered as :func:`backbones.export.formats.write_executorch` does; the
   lowered graph gives the number of XNNPACK delegate calls, the operators left to
   ExecuTorch's portable kernels, and the operators inside each delegate;
2. every operator becomes a *unit*, with what XNNPACK fuses into it (a convolution or a
   linear layer with the BatchNorm and the clamp / ReLU after it, as MobileNetV2's
   conv-BN-ReLU6 runs as one XNNPACK operator); its tensor inputs get the layout they have
   inside the delegate (NHWC after convolutions, following XNNPACK's own channels-last
   tagging), so a unit that needs the other layout pays its conversion, as in the model;
3. each distinct unit (operator, arguments, shapes, layouts) is exported alone, lowered the
   same way, and timed with the ExecuTorch runtime at every thread count, beside the whole
   model; a unit's time counts once per occurrence.

The groups' times show where the model spends its time and how each kind of operator
scales with threads; what the whole model takes beyond the sum of its isolated operators
(the "rest" row) is what running them in one graph adds or saves: delegate-call and
operator-dispatch overhead, caches shared or lost between operators.
"""
from __future__ import annotations

import operator
import os
import os.path as osp
import statistics
import tempfile
import time
from dataclasses import asdict, dataclass, field
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import torch
import torch.fx as fx
import torch.nn as nn

#: ops XNNPACK runs as part of the convolution / linear layer before them
_FUSED_AFTER = {'_native_batch_norm_legit_no_training', 'hardtanh', 'relu', 'clamp'}
_FUSES_INTO = {'convolution', 'linear'}
_LABELS = {'view_copy': 'reshape (view_copy)', 'permute_copy': 'transpose (permute_copy)', '_softmax': 'softmax',
           'add': 'add', 'mul': 'mul', 'sub': 'sub', 'bmm': 'bmm (attention matmul)', 'linear': 'linear',
           'gelu': 'gelu', 'rsqrt': 'rsqrt', 'mean': 'mean (global pool)', 'clone': 'clone', 'cat': 'cat',
           'hardtanh': 'hardtanh', 'relu': 'relu', 'upsample_nearest2d': 'upsample nearest (portable)',
           'upsample_bilinear2d': 'upsample bilinear'}


def _aten(target):
    """The ATen operator behind an edge-dialect operator."""
    return getattr(target, '_op', target)


def op_name(node: fx.Node) -> str:
    if node.target is operator.getitem:
        return 'getitem'
    name = getattr(_aten(node.target), '__name__', str(node.target))
    return name.split('.')[0]


def _shape(node) -> Optional[Tuple[int, ...]]:
    """The shape of a node's (first) output tensor."""
    val = node.meta.get('val') if isinstance(node, fx.Node) else None
    if isinstance(val, (tuple, list)) and val:
        val = val[0]
    return tuple(val.shape) if isinstance(val, torch.Tensor) else None


def unit_label(nodes: Sequence[fx.Node]) -> str:
    """The group an operator unit is counted in: convolutions by kind and kernel
    (1x1, depth-wise kxk, dense kxk), other operators by name."""
    head = nodes[0]
    name = op_name(head)
    if name == 'convolution':
        weight = _shape(head.args[1]) or (0, 0, 0, 0)
        groups = head.args[8] if len(head.args) > 8 else 1
        kernel = 'x'.join(str(k) for k in weight[2:])
        if groups > 1 and weight[1] == 1:
            label = f'conv depth-wise {kernel}'
        elif all(k == 1 for k in weight[2:]):
            label = 'conv 1x1'
        else:
            label = f'conv {kernel}'
        return label
    return _LABELS.get(name, name)


@dataclass
class Unit:
    """One operator of the lowered graph with what XNNPACK fuses into it."""
    nodes: List[fx.Node]
    delegated: bool
    label: str = ''


def _constant_names(ep) -> Dict[str, str]:
    sig = ep.graph_signature
    return {**sig.inputs_to_parameters, **sig.inputs_to_buffers, **sig.inputs_to_lifted_tensor_constants}


def _constant(ep, name: str) -> torch.Tensor:
    target = _constant_names(ep)[name]
    value = ep.state_dict[target] if target in ep.state_dict else ep.constants[target]
    return value.detach().clone()


def nhwc_tags(ep) -> Dict[fx.Node, bool]:
    """Which 4-D tensors of a delegated graph XNNPACK keeps channels-last, following its
    ``ChannelsLastTaggedReshapePass``: convolutions, pools and means produce NHWC, a view,
    squeeze or linear layer needs NCHW, other operators follow their inputs."""
    from executorch.backends.xnnpack._passes.channels_last_tagged_reshape_pass import \
        ChannelsLastTaggedReshapePass as Tags
    constants = _constant_names(ep)
    tags: Dict[fx.Node, bool] = {}
    for node in ep.graph.nodes:
        shape = _shape(node)
        is_4d = shape is not None and len(shape) == 4
        if node.op != 'call_function':
            tags[node] = False
        elif node.target is operator.getitem:
            tags[node] = tags.get(node.args[0], False)
        elif node.target in Tags.memory_sensitive_ops_nhwc:
            tags[node] = True
        elif node.target in Tags.memory_sensitive_ops_nchw or op_name(node) == 'view_copy':
            tags[node] = False
        else:
            inputs = [a for a in node.all_input_nodes if a.name not in constants]
            tags[node] = is_4d and any(tags.get(a, False) for a in inputs)
    return tags


def layout_conversions(ep, tags: Dict[fx.Node, bool]) -> int:
    """How many NHWC <-> NCHW conversions XNNPACK inserts in a delegated graph (each a
    transpose of a whole feature map; one per tensor and direction, as the pass reuses them),
    counting the graph's outputs converted back to NCHW."""
    from executorch.backends.xnnpack._passes.channels_last_tagged_reshape_pass import \
        ChannelsLastTaggedReshapePass as Tags
    constants = _constant_names(ep)
    converted = set()
    for node in ep.graph.nodes:
        if node.op == 'output':
            converted.update((a, False) for a in node.all_input_nodes if tags.get(a))
            continue
        if node.op != 'call_function' or node.target is operator.getitem:
            continue
        inputs = [a for a in node.all_input_nodes if a.name not in constants and len(_shape(a) or ()) == 4]
        if node.target in Tags.memory_sensitive_ops_nhwc:
            converted.update((a, True) for a in inputs[:1] if not tags.get(a))
        elif node.target in Tags.memory_sensitive_ops_nchw or op_name(node) == 'view_copy':
            converted.update((a, False) for a in inputs if tags.get(a))
        elif tags.get(node):
            converted.update((a, True) for a in inputs if not tags.get(a))
    return len(converted)


def split_units(ep, delegated: bool) -> List[Unit]:
    """The operator units of one graph in execution order (getitems go with their producer;
    BatchNorm and clamps with the convolution / linear layer they follow when it has no
    other user)."""
    units: List[Unit] = []
    unit_of: Dict[fx.Node, Unit] = {}
    for node in ep.graph.nodes:
        if node.op != 'call_function' or 'executorch_call_delegate' in str(node.target):
            continue
        name = op_name(node)
        source = node.args[0] if node.args and isinstance(node.args[0], fx.Node) else None
        if name == 'getitem' and source in unit_of:
            unit_of[source].nodes.append(node)
            unit_of[node] = unit_of[source]
            continue
        if name in _FUSED_AFTER and source in unit_of and len(source.users) == 1:
            owner = unit_of[source]
            if op_name(owner.nodes[0]) in _FUSES_INTO and source is owner.nodes[-1]:
                owner.nodes.append(node)
                unit_of[node] = owner
                continue
        unit = Unit([node], delegated)
        unit.label = unit_label(unit.nodes)
        units.append(unit)
        unit_of[node] = unit
    return units


def _example(val: torch.Tensor, channels_last: bool) -> torch.Tensor:
    g = torch.Generator().manual_seed(0)
    if val.dtype.is_floating_point:
        x = torch.rand(tuple(val.shape), generator=g, dtype=val.dtype) + 0.5  # positive: safe for rsqrt / log
    else:
        x = torch.zeros(tuple(val.shape), dtype=val.dtype)
    return x.contiguous(memory_format=torch.channels_last) if channels_last and x.dim() == 4 else x


def unit_program(ep, unit: Unit, tags: Dict[fx.Node, bool]) -> Tuple[fx.GraphModule, Tuple[torch.Tensor, ...], tuple]:
    """A module running ``unit`` alone (the graph's constants as buffers, activations as
    inputs in their layout), its example inputs, and a key equal for units that time the
    same (operators, arguments, shapes and layouts; constant values do not matter)."""
    constants = _constant_names(ep)
    members = set(unit.nodes)
    root = nn.Module()
    graph = fx.Graph()
    env: Dict[fx.Node, fx.Node] = {}
    inputs: List[torch.Tensor] = []
    key: list = []
    for node in unit.nodes:
        for a in node.all_input_nodes:
            if a in members or a in env:
                continue
            if a.op == 'placeholder' and a.name in constants:
                attr = f'constant{len(root._buffers)}'
                value = _constant(ep, a.name)
                root.register_buffer(attr, value)
                env[a] = graph.get_attr(attr)
                key.append(('constant', tuple(value.shape), str(value.dtype)))
            else:
                example = _example(a.meta['val'], tags.get(a, False))
                env[a] = graph.placeholder(f'x{len(inputs)}')
                inputs.append(example)
                key.append(('input', tuple(example.shape), str(example.dtype), tags.get(a, False)))
        new = graph.node_copy(node, lambda a: env[a])
        new.target = _aten(node.target)
        new.meta = {}
        env[node] = new
        key.append((op_name(node), repr([a if not isinstance(a, fx.Node) else '*' for a in node.args]),
                    repr(sorted(node.kwargs.items(), key=lambda kv: kv[0])) if node.kwargs else ''))
    outputs = [env[n] for n in unit.nodes if isinstance(n.meta.get('val'), torch.Tensor)
               and (not n.users or any(u not in members for u in n.users))]
    if not outputs:
        outputs = [env[unit.nodes[-1]]]
    graph.output(tuple(outputs))
    return fx.GraphModule(root, graph), tuple(inputs), tuple(key)


def lower(module: nn.Module, example: Sequence[torch.Tensor], delegate: bool = True):
    """``to_edge_transform_and_lower`` with the XNNPACK partitioner (as the exports do), or
    without (portable kernels only)."""
    from executorch.backends.xnnpack.partition.xnnpack_partitioner import XnnpackPartitioner
    from executorch.exir import to_edge_transform_and_lower
    exported = torch.export.export(module, tuple(example))
    return to_edge_transform_and_lower(exported, partitioner=[XnnpackPartitioner()] if delegate else [])


@dataclass
class GraphSummary:
    delegate_calls: int
    portable_ops: Dict[str, int]
    delegated_ops: int
    layout_conversions: int


def lowered_units(edge) -> Tuple[List[Tuple[Unit, object, Dict]], GraphSummary]:
    """The units of a lowered program, each with the exported program it belongs to and
    that program's layout tags, and a summary of the lowered graph."""
    top = edge.exported_program()
    out = []
    delegate_calls = delegated_ops = conversions = 0
    for node in top.graph_module.graph.nodes:
        if node.op == 'get_attr' and node.name.startswith('lowered_module'):
            inner = getattr(top.graph_module, node.target).original_module
            tags = nhwc_tags(inner)
            conversions += layout_conversions(inner, tags)
            for unit in split_units(inner, delegated=True):
                out.append((unit, inner, tags))
                delegated_ops += 1
        elif node.op == 'call_function' and 'executorch_call_delegate' in str(node.target):
            delegate_calls += 1
    portable: Dict[str, int] = {}
    for unit in split_units(top, delegated=False):
        if op_name(unit.nodes[0]) == 'getitem':
            continue
        out.append((unit, top, {}))
        portable[unit.label] = portable.get(unit.label, 0) + 1
    return out, GraphSummary(delegate_calls, portable, delegated_ops, conversions)


# ---------------------------------------------------------------------------- ETDump
def etdump_available(workdir: Optional[str] = None) -> bool:
    """Whether this ExecuTorch runtime records ETDump profiling events (a build with the
    event tracer); the pip wheels do not."""
    from executorch.extension.pybindings import portable_lib

    class Tiny(nn.Module):
        def forward(self, x):
            return x + 1

    with tempfile.TemporaryDirectory(dir=workdir) as tmp:
        pte, dump = osp.join(tmp, 'tiny.pte'), osp.join(tmp, 'tiny.etdp')
        with open(pte, 'wb') as f:
            f.write(lower(Tiny(), (torch.zeros(2),), delegate=False).to_executorch().buffer)
        program = portable_lib._load_for_executorch(pte, enable_etdump=True, debug_buffer_size=0)
        program.forward((torch.zeros(2),))
        try:
            program.write_etdump_result_to_file(dump)
        except Exception:  # noqa: BLE001 - any failure means: no ETDump here
            return False
        return osp.exists(dump) and osp.getsize(dump) > 0


# ---------------------------------------------------------------------------- timing
class _AddOne(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + 1
@dataclass
class GroupProfile:
    """One operator group of a model: how many units, and their summed time per thread count."""
    label: str
    count: int
    ms: Dict[int, float]
    delegated: bool = True


@dataclass
class ModelProfile:
    model: str
    size: Tuple[int, int]
    whole_ms: Dict[int, float]
    groups: List[GroupProfile]
    delegate_calls: int
    portable_ops: Dict[str, int]
    delegated_ops: int
    distinct_units: int
    layout_conversions: int
    #: what running a trivial program costs (subtracted from every isolated operator)
    call_overhead_ms: Dict[int, float] = field(default_factory=dict)
    method: str = 'isolated operators (ExecuTorch runtime, XNNPACK)'
    load: Optional[Tuple[float, float, float]] = None

    def op_sum(self, threads: int) -> float:
        return sum(g.ms[threads] for g in self.groups)

    def rest(self, threads: int) -> float:
        """Whole model minus the sum of its isolated operators."""
        return self.whole_ms[threads] - self.op_sum(threads)


def _time_methods(methods: Dict[str, Tuple[str, str]], inputs: Dict[str, Tuple[torch.Tensor, ...]], threads: int,
                  seconds_each: float, rounds: int) -> Dict[str, float]:
    """Median ms of every ``key: (program path, method)`` at ``threads``, timed in
    ``rounds`` interleaved rounds, outputs read in place."""
    from executorch.extension.pybindings import portable_lib

    from .timing import host_threads
    portable_lib._unsafe_reset_threadpool(threads)
    loaded = {path: portable_lib._load_for_executorch(path) for path in {p for p, _ in methods.values()}}
    samples: Dict[str, List[float]] = {k: [] for k in methods}
    with host_threads(1):
        for k, (path, method) in methods.items():
            for _ in range(3):
                loaded[path].run_method(method, inputs[k], False)
        for _ in range(rounds):
            for k, (path, method) in methods.items():
                program = loaded[path]
                start = time.perf_counter()
                while True:
                    t = time.perf_counter()
                    program.run_method(method, inputs[k], False)  # outputs in place, as an app reads them
                    samples[k].append((time.perf_counter() - t) * 1e3)
                    if len(samples[k]) >= 3 and time.perf_counter() - start >= seconds_each / rounds:
                        break
    return {k: statistics.median(v) for k, v in samples.items()}


def _refused(methods: Dict[str, Tuple[str, str]], inputs: Dict[str, Tuple[torch.Tensor, ...]]) -> List[str]:
    """The methods that fail to run once."""
    from executorch.extension.pybindings import portable_lib
    loaded: Dict[str, object] = {}
    refused = []
    for k, (path, method) in methods.items():
        if path not in loaded:
            loaded[path] = portable_lib._load_for_executorch(path)
        try:
            loaded[path].run_method(method, inputs[k], False)
        except RuntimeError:
            refused.append(k)
    return refused


def _write_methods(programs: Dict[str, Tuple[nn.Module, Tuple[torch.Tensor, ...]]], delegate: bool,
                   path: str) -> None:
    """One .pte holding every ``name: (module, inputs)`` as a method (lowering many
    programs at once costs less than one by one)."""
    from executorch.backends.xnnpack.partition.xnnpack_partitioner import XnnpackPartitioner
    from executorch.exir import to_edge_transform_and_lower
    exported = {name: torch.export.export(module, tuple(x)) for name, (module, x) in programs.items()}
    edge = to_edge_transform_and_lower(exported, partitioner=[XnnpackPartitioner()] if delegate else [])
    with open(path, 'wb') as f:
        f.write(edge.to_executorch().buffer)


def profile_model(name: str, module: nn.Module, example: torch.Tensor, threads: Sequence[int], workdir: str,
                  seconds_each: float = 0.03, whole_seconds: float = 2.0, rounds: int = 3,
                  log: Callable[[str], None] = print) -> ModelProfile:
    """Lower ``module`` to ExecuTorch XNNPACK, time it whole and operator by operator at
    each thread count (see the module docstring)."""
    started = time.time()
    edge = lower(module, (example,))
    os.makedirs(workdir, exist_ok=True)
    whole = osp.join(workdir, 'whole.pte')
    with open(whole, 'wb') as f:
        f.write(edge.to_executorch().buffer)
    units, summary = lowered_units(edge)
    distinct: Dict[tuple, str] = {}
    programs: Dict[bool, Dict[str, Tuple[nn.Module, Tuple[torch.Tensor, ...]]]] = {True: {}, False: {}}
    inputs: Dict[str, Tuple[torch.Tensor, ...]] = {}
    sources: Dict[str, Tuple[Unit, object]] = {}
    unit_keys: List[Tuple[Unit, str]] = []
    for unit, ep, tags in units:
        program, x, key = unit_program(ep, unit, tags)
        key = (unit.delegated,) + key
        if key not in distinct:
            distinct[key] = f'op{len(distinct)}'
            programs[unit.delegated][distinct[key]] = (program, x)
            inputs[distinct[key]] = x
            sources[distinct[key]] = (unit, ep)
        unit_keys.append((unit, distinct[key]))
    # the cost of running a program at all (a one-element add in one delegate call)
    programs[True]['call'] = (_AddOne(), (torch.ones(1),))
    inputs['call'] = (torch.ones(1),)
    methods: Dict[str, Tuple[str, str]] = {}
    for delegate, group in programs.items():
        if not group:
            continue
        path = osp.join(workdir, 'operators.pte' if delegate else 'portable_operators.pte')
        _write_methods(group, delegate, path)
        methods.update({k: (path, k) for k in group})
    # a unit the runtime refuses in the layout it has in the model (e.g. a one-channel map kept
    # channels-last) is timed with channels-first inputs instead; one refused both ways is left out
    refused = _refused(methods, inputs)
    if refused:
        fallback = {k: unit_program(sources[k][1], sources[k][0], {})[:2] for k in refused}
        path = osp.join(workdir, 'operators_nchw.pte')
        for k, (program, x) in fallback.items():
            inputs[k] = x
        _write_methods(fallback, True, path)
        methods.update({k: (path, k) for k in fallback})
        dropped = _refused({k: methods[k] for k in refused}, inputs)
        for k in dropped:
            del methods[k]
        log(f'{name}: {len(refused)} operator(s) timed with channels-first inputs'
            + (f', {len(dropped)} refused and left out' if dropped else ''))
    log(f'{name}: {len(units)} operators, {len(distinct)} distinct, lowered in {time.time() - started:.0f} s; '
        f'{summary.delegate_calls} delegate call(s), portable ops {summary.portable_ops or "none"}, '
        f'{summary.layout_conversions} layout conversion(s)')
    whole_ms, unit_ms, overhead = {}, {}, {}
    for n in threads:
        whole_ms[n] = _time_methods({'whole': (whole, 'forward')}, {'whole': (example,)}, n, whole_seconds,
                                    rounds)['whole']
        unit_ms[n] = _time_methods(methods, inputs, n, seconds_each, rounds)
        overhead[n] = unit_ms[n].pop('call')
        unit_ms[n] = {k: max(v - overhead[n], 0.0) for k, v in unit_ms[n].items()}
        log(f'{name} {n} thread(s): whole {whole_ms[n]:.2f} ms, sum of operators '
            f'{sum(unit_ms[n].get(k, 0.0) for _, k in unit_keys):.2f} ms (call overhead {overhead[n] * 1e3:.0f} us '
            'subtracted from each)')
    groups: Dict[Tuple[str, bool], GroupProfile] = {}
    for unit, key in unit_keys:
        if key not in unit_ms[threads[0]]:
            continue
        g = groups.setdefault((unit.label, unit.delegated),
                              GroupProfile(unit.label, 0, {n: 0.0 for n in threads}, unit.delegated))
        g.count += 1
        for n in threads:
            g.ms[n] += unit_ms[n][key]
    ordered = sorted(groups.values(), key=lambda g: -g.ms[threads[0]])
    return ModelProfile(name, tuple(example.shape[-2:]), whole_ms, ordered, summary.delegate_calls,
                        summary.portable_ops, summary.delegated_ops, len(distinct), summary.layout_conversions,
                        call_overhead_ms=overhead, load=os.getloadavg() if hasattr(os, 'getloadavg') else None)


# ---------------------------------------------------------------------------- tables
def _speedup(ms: Dict[int, float], threads: Sequence[int]) -> str:
    if len(threads) < 2 or ms[threads[-1]] <= 0:
        return '—'
    return f'{ms[threads[0]] / ms[threads[-1]]:.2f}x'


def format_profile(p: ModelProfile, threads: Sequence[int], top: int = 12) -> str:
    """One model's operator groups by time at the first thread count, with their share of
    the whole model and their time at every thread count."""
    t0 = threads[0]
    head = ' | '.join(f'{n}T ms' for n in threads)
    speed = f' | {threads[0]}T / {threads[-1]}T' if len(threads) > 1 else ''
    lines = [f'#### {p.model} ({p.size[0]}x{p.size[1]})', '',
             f'Whole model {", ".join(f"{p.whole_ms[n]:.2f} ms at {n}T" for n in threads)}; '
             f'{p.delegate_calls} XNNPACK delegate call(s), '
             f'{sum(p.portable_ops.values())} portable op(s){" " + str(p.portable_ops) if p.portable_ops else ""}, '
             f'{p.delegated_ops} delegated operators ({p.distinct_units} distinct), '
             f'{p.layout_conversions} NHWC/NCHW conversion(s) inside the delegate. Operators timed alone, less '
             'the cost of a trivial program call ('
             + ', '.join(f'{v * 1e3:.0f} us at {n}T' for n, v in p.call_overhead_ms.items()) + ').', '',
             f'| operator group | count | {head} | share of whole at {t0}T | share of operators at {t0}T{speed} |',
             '|---|---|' + '---|' * len(threads) + '---|---|' + ('---|' if len(threads) > 1 else '')]
    op_sum = p.op_sum(t0)

    def row(label, count, ms):
        cells = ' | '.join(f'{ms[n]:.2f}' for n in threads)
        share = f'{ms[t0] / p.whole_ms[t0]:.1%} | ' + (f'{ms[t0] / op_sum:.1%}' if op_sum > 0 else '—')
        tail = f' | {_speedup(ms, threads)} |' if len(threads) > 1 else ' |'
        return f'| {label} | {count} | {cells} | {share}' + tail

    for g in p.groups[:top]:
        lines.append(row(g.label + ('' if g.delegated else ' (portable)'), g.count, g.ms))
    rest = p.groups[top:]
    if rest:
        lines.append(row(f'{len(rest)} other groups', sum(g.count for g in rest),
                         {n: sum(g.ms[n] for g in rest) for n in threads}))
    lines.append(row('sum of isolated operators', sum(g.count for g in p.groups), {n: p.op_sum(n) for n in threads}))
    lines.append(row('rest (whole minus sum)', '', {n: p.rest(n) for n in threads}))
    lines.append(row('**whole model**', '', p.whole_ms))
    return '\n'.join(lines)


def format_profile_summary(profiles: Sequence[ModelProfile], threads: Sequence[int], reference: str) -> str:
    """One row per model: whole-model times, ratio to ``reference`` and speed-up with
    threads, delegate calls, portable ops, conversions and the three largest groups."""
    ref = next((p for p in profiles if p.model == reference), None)
    head = ' | '.join(f'{n}T ms' for n in threads)
    t0 = threads[0]
    lines = [f'| model | {head} | {t0}T / {threads[-1]}T | x {reference} at {t0}T | sum of operators {t0}T ms '
             f'(x {reference}) | operators | delegate calls | portable ops | NHWC/NCHW conversions | '
             f'largest groups at {t0}T (share of whole) |',
             '|---|' + '---|' * len(threads) + '---|---|---|---|---|---|---|---|']
    for p in profiles:
        ratio = f'{p.whole_ms[t0] / ref.whole_ms[t0]:.2f}x' if ref else '—'
        op_ratio = f' ({p.op_sum(t0) / ref.op_sum(t0):.2f}x)' if ref and ref.op_sum(t0) > 0 else ''
        tops = ', '.join(f'{g.label} {g.ms[t0] / p.whole_ms[t0]:.0%}' for g in p.groups[:3])
        lines.append(f'| {p.model} | ' + ' | '.join(f'{p.whole_ms[n]:.2f}' for n in threads)
                     + f' | {_speedup(p.whole_ms, threads)} | {ratio} | {p.op_sum(t0):.2f}{op_ratio} | '
                     f'{p.delegated_ops} | {p.delegate_calls} | {sum(p.portable_ops.values())} | '
                     f'{p.layout_conversions} | {tops} |')
    return '\n'.join(lines)


def profile_report(profiles: Sequence[ModelProfile], threads: Sequence[int], reference: str, etdump: bool) -> str:
    loads = [p.load for p in profiles if p.load]
    load = (' Load average during the run: ' + ', '.join(f'{avg[0]:.1f}' for avg in loads)
            + ' (1-minute, after each model).') if loads else ''
    method = ('ETDump is available in this ExecuTorch build, but these tables come from isolated operators'
              if etdump else 'This ExecuTorch build records no ETDump events (the pip wheels are built without the '
              'event tracer), so each operator (with what XNNPACK fuses into it) was exported alone and timed with '
              'the same runtime')
    return '\n\n'.join([f'Per-operator profiles, ExecuTorch XNNPACK fp32.{load}',
                        f'{method}; the whole models were timed in the same run. Times are medians; a group\'s time '
                        'is the sum over its operators.',
                        format_profile_summary(profiles, threads, reference)]
                       + [format_profile(p, threads) for p in profiles])


def profile_json(profiles: Sequence[ModelProfile], etdump: bool) -> dict:
    return dict(etdump=etdump, profiles=[asdict(p) for p in profiles])


def profiles_from_json(data: dict) -> List[ModelProfile]:
    """The profiles :func:`profile_json` wrote (thread counts back to ints), to format again."""
    def by_threads(d):
        return {int(k): v for k, v in d.items()}
    out = []
    for p in data['profiles']:
        p = dict(p, whole_ms=by_threads(p['whole_ms']), call_overhead_ms=by_threads(p['call_overhead_ms']),
                 size=tuple(p['size']), load=tuple(p['load']) if p.get('load') else None,
                 groups=[GroupProfile(**dict(g, ms=by_threads(g['ms']))) for g in p['groups']])
        out.append(ModelProfile(**p))
    return out


def profile_models(names: Sequence[str], size: Tuple[int, int], threads: Sequence[int], seconds: float, out_dir: str,
                   results_dir: str, header: str, log: Callable[[str], None] = print) -> str:
    """Profile each backbone or config (beside MobileNetV2 x1.0) and write
    ``results_dir/profile_HxW.{md,json}``; returns the report."""
    from ..export.targets import build_target, target_name
    from .baselines import REFERENCE, baseline_target
    from .results import write_results
    names = list(dict.fromkeys([REFERENCE] + list(names)))
    etdump = etdump_available()
    log(f'ETDump events in this ExecuTorch build: {"yes" if etdump else "no (pip wheel without the event tracer)"}; '
        'profiling operator by operator')
    x = torch.rand(1, 3, *size, generator=torch.Generator().manual_seed(0))
    profiles = []
    for name in names:
        target = baseline_target(name, size) if name == REFERENCE else build_target(name, size)
        profiles.append(profile_model(target_name(name), target.module, x, threads,
                                      osp.join(out_dir, 'profile', target_name(name)), seconds_each=seconds / 100,
                                      whole_seconds=seconds, log=log))
    report = profile_report(profiles, threads, REFERENCE, etdump)
    written = write_results(osp.join(results_dir, f'profile_{size[0]}x{size[1]}'), header, report,
                            profile_json(profiles, etdump))
    log('written: ' + ', '.join(written))
    return report

