"""Export formats: one :class:`Format` record each, with the function that writes the file
and, where this machine can run it, the runner that loads it.

Adding a format is one :func:`register_format` call: the export tool, the parity check
(:func:`backbones.export.convert.export`) and the benchmark pick it up by name. Writers write
through :mod:`backbones.fileio` (a temporary name renamed into place), so an interrupted
export leaves the previous file whole.
"""
from __future__ import annotations

import importlib.util
import inspect
import os
import os.path as osp
from dataclasses import dataclass, field
from typing import Callable, Dict, List, Optional, Sequence

import torch
import torch.nn as nn

from ..fileio import atomic_path, atomic_write

#: runs an exported file: ``runner(path, threads, clone_outputs=True)`` -> ``fn(x) -> list of output
#: tensors``; ``clone_outputs=False`` may return the runtime's own buffers (timing)
Runner = Callable[[str, Optional[int]], Callable[[torch.Tensor], List[torch.Tensor]]]


@dataclass
class Written:
    """What writing a file tells beyond the file itself."""
    delegated_fraction: Optional[float] = None
    not_delegated: Dict[str, int] = field(default_factory=dict)
    outputs: Optional[List[torch.Tensor]] = None  # for formats checked in memory, not from the file
    note: str = ''
    #: ExecuTorch: bytes of the memory plan the runtime allocates on load for the tensors
    #: between delegate calls and portable operators (XNNPACK's own workspace comes on top)
    planned_bytes: Optional[int] = None


@dataclass(frozen=True)
class Format:
    """One export format.

    Args:
        name: what ``--formats`` takes.
        suffix: appended to ``{name}_{H}x{W}`` to make the file name.
        extra: the pip extra that installs its packages; ``module``: one of them to look for.
        write: ``write(module, example, path) -> Written``.
        runner: loads and runs the file here, or None (e.g. Core ML needs macOS).
        quantized: the module is quantised (with a calibration set) before writing.
        adapt: ``adapt(target, example) -> (target, example)``, the format's own version of a
            target when its inputs / outputs differ (Core ML: an image input, int32 outputs).
    """
    name: str
    suffix: str
    extra: str
    module: str
    write: Callable[[nn.Module, torch.Tensor, str], Written]
    runner: Optional[Runner] = None
    quantized: bool = False
    adapt: Optional[Callable[..., tuple]] = None


FORMATS: Dict[str, Format] = {}


def register_format(fmt: Format) -> Format:
    FORMATS[fmt.name] = fmt
    return fmt


def get_format(name: str) -> Format:
    if name not in FORMATS:
        raise ValueError(f'unknown format {name!r}; choose from {list(FORMATS)}')
    return FORMATS[name]


class MissingExtra(RuntimeError):
    pass


def require(name: str) -> None:
    """Raise a clear error when the packages of an export format are not installed."""
    fmt = get_format(name)
    if importlib.util.find_spec(fmt.module) is None:
        raise MissingExtra(f'exporting to {name} needs the {fmt.module!r} package: pip install '
                           f'"edgeformers[{fmt.extra}]" (from a checkout: .venv/bin/pip install -e ".[{fmt.extra}]")')


# ---------------------------------------------------------------------------- ExecuTorch
def _op_name(node) -> str:
    target = str(node.target)
    return target.split(':')[1].split('(')[0].strip(' >') if ':' in target else target


def _counts(node) -> bool:
    """An operator of the model (not bookkeeping: tuple access, the int8 model's
    (de)quantisation at delegate edges, delegate calls)."""
    target = str(node.target)
    return node.op == 'call_function' and not any(
        k in target for k in ('getitem', 'executorch_call_delegate', 'quantize_per', 'dequantize_per'))


def write_executorch(module: nn.Module, example: torch.Tensor, path: str) -> Written:
    """Lower to XNNPACK and write the .pte; reports the share of operators delegated and the
    operators left to ExecuTorch's portable kernels. An in-graph RoIAlign gathers one cell
    at a time here (:func:`~.two_stage.gathers_per_cell`)."""
    from executorch.backends.xnnpack.partition.xnnpack_partitioner import XnnpackPartitioner
    from executorch.exir import to_edge_transform_and_lower
    from .two_stage import gathers_per_cell
    from .two_stage_lowering import cell_step_partitioner, order_depth_first
    with gathers_per_cell(module):
        program = torch.export.export(module, (example,))
    edge = to_edge_transform_and_lower(program, partitioner=[cell_step_partitioner(), XnnpackPartitioner()])
    graph_module = edge.exported_program().graph_module
    order_depth_first(graph_module)
    delegated = 0
    left: Dict[str, int] = {}
    for node in graph_module.graph.nodes:
        if node.op == 'get_attr' and node.name.startswith('lowered_module'):
            lowered = getattr(graph_module, node.target)
            delegated += sum(1 for n in lowered.original_module.graph.nodes if _counts(n))
        elif _counts(node):
            left[_op_name(node)] = left.get(_op_name(node), 0) + 1
    manager = edge.to_executorch()
    plan = next(p for p in manager.executorch_program.execution_plan if p.name == 'forward')
    with atomic_write(path) as f:
        f.write(manager.buffer)
    return Written(delegated / max(delegated + sum(left.values()), 1), left,
                   planned_bytes=sum(plan.non_const_buffer_sizes))


def executorch_runner(path: str, threads: Optional[int] = None, clone_outputs: bool = True):
    """Loads a .pte. ``clone_outputs=False`` returns the runtime's own output buffers
    (overwritten by the next call), as an app reads them: the benchmark times that way,
    since the Python bindings' clones are PyTorch copies no phone runs."""
    from executorch.extension.pybindings import portable_lib
    if threads:
        portable_lib._unsafe_reset_threadpool(threads)
    program = portable_lib._load_for_executorch(path)
    return lambda x: list(program.forward((x,), clone_outputs))


# ---------------------------------------------------------------------------- ONNX
def _sigmoid_as_exp(self):
    """``aten.sigmoid`` as ``1 / (1 + exp(-x))``, the formula of PyTorch's CPU kernel.

    onnxruntime's own ``Sigmoid`` kernel (MLAS) has an absolute error near 1e-7, so small
    probabilities lose their relative precision: in a weakly trained RPN with objectness around
    1e-6 it turns most distinct scores into ties, which re-orders the proposals that NMS then
    keeps. ``Exp`` keeps the relative precision (within 3 ulp of PyTorch's sigmoid)."""
    from onnxscript import opset18 as op
    return op.Reciprocal(op.Add(op.CastLike(1.0, self), op.Exp(op.Neg(self))))


def write_onnx(module: nn.Module, example: torch.Tensor, path: str) -> Written:
    if 'dynamo' not in inspect.signature(torch.onnx.export).parameters:
        raise MissingExtra(f'exporting to onnx uses torch.onnx.export(dynamo=True), which needs torch >= 2.5 '
                           f'(this is torch {torch.__version__}); the [export] extra installs torch 2.13')
    with atomic_path(path) as tmp:
        torch.onnx.export(module, (example,), tmp, opset_version=18, dynamo=True, external_data=False,
                          input_names=['image'],
                          custom_translation_table={torch.ops.aten.sigmoid.default: _sigmoid_as_exp})
    return Written()


def onnx_runner(path: str, threads: Optional[int] = None, clone_outputs: bool = True):
    """``clone_outputs``: onnxruntime returns new arrays on every call either way."""
    from .runner import onnx_session
    session = onnx_session(path, threads)
    name = session.get_inputs()[0].name
    return lambda x: [torch.from_numpy(o) for o in session.run(None, {name: x.numpy()})]


# ---------------------------------------------------------------------------- Core ML, TFLite
def write_coreml(module: nn.Module, example: torch.Tensor, path: str) -> Written:
    """mlprogram (iOS 17 / macOS 14) with an RGB image input where the target has one
    (:mod:`backbones.export.coreml`); the saved package is checked, not run (that needs macOS)."""
    from .coreml import write
    return Written(note=write(module, example, path))


def adapt_coreml(target, example):
    from .coreml import coreml_target
    return coreml_target(target, example)


def write_tflite(module: nn.Module, example: torch.Tensor, path: str) -> Written:
    import litert_torch
    edge_model = litert_torch.convert(module, (example,))
    with atomic_path(path) as tmp:
        edge_model.export(tmp)
    out = edge_model(example)
    return Written(outputs=list(out) if isinstance(out, (tuple, list)) else [out])


register_format(Format('executorch', '.pte', 'export', 'executorch', write_executorch, executorch_runner))
register_format(Format('executorch-int8', '_int8.pte', 'export', 'executorch', write_executorch, executorch_runner,
                       quantized=True))
register_format(Format('onnx', '.onnx', 'export', 'onnxruntime', write_onnx, onnx_runner))
register_format(Format('coreml', '.mlpackage', 'export', 'coremltools', write_coreml, adapt=adapt_coreml))
register_format(Format('tflite', '.tflite', 'tflite', 'litert_torch', write_tflite))


def file_size(path: str) -> int:
    """Bytes of a file, or of a package folder (``.mlpackage``)."""
    if osp.isdir(path):
        return sum(osp.getsize(osp.join(d, f)) for d, _, fs in os.walk(path) for f in fs)
    return osp.getsize(path)


def run_exported(path: str, x: torch.Tensor, formats: Sequence[str] = ('executorch', 'onnx')) -> List[torch.Tensor]:
    """Run an exported file by its suffix (``.pte`` / ``.onnx``) on one input."""
    for name in formats:
        fmt = FORMATS[name]
        if path.endswith(fmt.suffix) and fmt.runner is not None:
            return fmt.runner(path, None)(x)
    raise ValueError(f'{path}: no runner here for this kind of file')
