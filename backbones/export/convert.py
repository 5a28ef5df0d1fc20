"""Export a target to a format and check the file against eager PyTorch.

XNNPACK delegates every operator of both backbone families (after
:func:`backbones.export.prepare.prepare_for_export`). In detectors, mmdet's FPN upsamples by
nearest neighbour, which XNNPACK does not delegate: those two to four ops run on
ExecuTorch's portable kernels.
"""
from __future__ import annotations

import glob
import os
import os.path as osp
import time
from dataclasses import dataclass, field
from typing import Dict, List, Optional, Sequence, Tuple

import torch
import torch.nn as nn

from ..checkpoints.loading import check_values
from .formats import file_size, get_format, require
from .targets import IMAGENET_MEAN, IMAGENET_STD, Target


@dataclass
class ExportResult:
    fmt: str
    path: str
    size_bytes: int
    seconds: float
    max_abs_diff: Optional[float] = None
    max_rel_diff: Optional[float] = None
    delegated_fraction: Optional[float] = None
    not_delegated: Dict[str, int] = field(default_factory=dict)
    note: str = ''
    planned_bytes: Optional[int] = None  # ExecuTorch: see formats.Written

    def summary(self) -> str:
        """One line: size, share delegated, memory plan, largest difference from eager, time."""
        parts = [f'{self.size_bytes / 1e6:.1f} MB']
        if self.delegated_fraction is not None:
            parts.append(f'delegated {self.delegated_fraction:.1%}')
        if self.planned_bytes is not None:
            parts.append(f'memory plan {self.planned_bytes / 1e6:.0f} MB')
        if self.max_rel_diff is not None:
            parts.append(f'max rel diff {self.max_rel_diff:.1e}')
        return ', '.join(parts + [f'export {self.seconds:.0f} s'])

    def describe(self) -> str:
        parts = [f'{self.fmt:<16} {self.path}  {self.size_bytes / 1e6:.2f} MB  export {self.seconds:.1f}s']
        if self.delegated_fraction is not None:
            parts.append(f'XNNPACK-delegated ops {self.delegated_fraction:.1%}'
                         + (f' (not delegated: {self.not_delegated})' if self.not_delegated else ''))
        if self.planned_bytes is not None:
            parts.append(f'memory plan {self.planned_bytes / 1e6:.1f} MB (allocated on load; XNNPACK\'s '
                         'workspace comes on top)')
        if self.max_abs_diff is not None:
            parts.append(f'vs eager: max abs {self.max_abs_diff:.2e}, max rel {self.max_rel_diff:.2e}')
        if self.note:
            parts.append(self.note)
        return '\n    '.join(parts)


def _flat(out) -> List[torch.Tensor]:
    return list(out) if isinstance(out, (tuple, list)) else [out]


class NonFiniteOutputError(ValueError):
    """An eager or an exported output holds NaN or infinity: no parity can be claimed."""


def _nonfinite(outputs: Sequence[torch.Tensor]) -> List[str]:
    found = []
    for i, out in enumerate(outputs):
        out = torch.as_tensor(out)
        if out.is_floating_point():
            bad = int((~torch.isfinite(out)).sum())
            if bad:
                found.append(f'output {i}: {bad} of {out.numel()} values')
    return found


def compare(eager: Sequence[torch.Tensor], exported: Sequence[torch.Tensor]) -> Tuple[float, float]:
    """Max absolute difference, and max difference relative to each output's largest value.
    A NaN or an infinity on either side raises :class:`NonFiniteOutputError`: equal NaNs are
    no match."""
    for side, outputs in (('eager PyTorch', eager), ('the export', exported)):
        bad = _nonfinite(outputs)
        if bad:
            raise NonFiniteOutputError(f'{side} gives NaN or infinite values ({"; ".join(bad)}): check the weights '
                                       'and the input; the export is not a faithful copy of a working model')
    abs_diff = rel_diff = 0.0
    for a, b in zip(eager, exported):
        # in float64: integer outputs (labels, uint8 masks / seg_map) must not wrap around
        a = a.to(torch.float64)
        b = torch.as_tensor(b).reshape(a.shape).to(torch.float64)
        d = (a - b).abs().max().item() if a.numel() else 0.0
        abs_diff = max(abs_diff, d)
        rel_diff = max(rel_diff, d / max(a.abs().max().item(), 1e-12))
    return abs_diff, rel_diff


def quantize_int8(module: nn.Module, example: torch.Tensor, calibration: Sequence[torch.Tensor]):
    """Static int8 (per-channel weights, per-tensor activations) with the XNNPACK quantizer."""
    from executorch.backends.xnnpack.quantizer.xnnpack_quantizer import (XNNPACKQuantizer,
                                                                         get_symmetric_quantization_config)
    from torchao.quantization.pt2e.quantize_pt2e import convert_pt2e, prepare_pt2e
    graph = unshare_parameters(torch.export.export(module, (example,)).module())
    quantizer = XNNPACKQuantizer().set_global(get_symmetric_quantization_config(is_per_channel=True))
    prepared = prepare_pt2e(graph, quantizer)
    with torch.no_grad():
        for batch in calibration:
            prepared(batch)
    return separate_output_dequantize(convert_pt2e(prepared))


def unshare_parameters(graph: torch.fx.GraphModule) -> torch.fx.GraphModule:
    """Give every further reader of a parameter its own copy. A detector's head runs the
    same convolutions on every FPN level; the quantizer annotates a shared weight for its
    first reader only, so the other levels' convolutions got int8 inputs with float weights,
    which XNNPACK refuses when the program loads (``Failed to create convolution node:
    xnn_status_invalid_parameter``). Exact: the copies hold the same values and quantise
    to the same integers."""
    for node in list(graph.graph.nodes):
        if node.op != 'get_attr' or len(node.users) < 2:
            continue
        owner_name, _, attr = node.target.rpartition('.')
        value = getattr(graph.get_submodule(owner_name) if owner_name else graph, attr)
        if not isinstance(value, torch.Tensor):
            continue
        for i, user in enumerate(list(node.users)[1:], 1):
            name = f'{node.target.replace(".", "_")}_reader{i}'
            copy = value.detach().clone()
            if isinstance(value, nn.Parameter):
                graph.register_parameter(name, nn.Parameter(copy, requires_grad=False))
            else:
                graph.register_buffer(name, copy)
            with graph.graph.inserting_before(user):
                reader = graph.graph.get_attr(name)
            reader.meta = dict(node.meta)
            user.replace_input_with(node, reader)
    return _recompiled(graph)


def separate_output_dequantize(graph: torch.fx.GraphModule) -> torch.fx.GraphModule:
    """Give every graph output that is a dequantize node also read inside the graph its own
    copy of that node. A Mask R-CNN network returns its FPN maps and feeds them to the RPN's
    convolutions; with one shared dequantize node, XNNPACK's channels-last pass (ExecuTorch
    1.4.1) re-routes the partition's output through a node it made without shape metadata
    and the lowering fails (``KeyError: 'val'``). Exact: the copy computes the same values."""
    output = next(node for node in graph.graph.nodes if node.op == 'output')
    for node in list(output.all_input_nodes):
        if 'dequantize' in str(node.target) and len(node.users) > 1:
            with graph.graph.inserting_after(node):
                own = graph.graph.node_copy(node)
            output.replace_input_with(node, own)
    return _recompiled(graph)


def _recompiled(graph: torch.fx.GraphModule) -> torch.fx.GraphModule:
    graph.graph.lint()
    graph.recompile()
    return graph


def _random_input(like: torch.Tensor, seed: int) -> torch.Tensor:
    """A random input shaped and typed like ``like`` (uint8 images for end-to-end models)."""
    g = torch.Generator().manual_seed(seed)
    if like.dtype == torch.uint8:
        return torch.randint(0, 256, like.shape, dtype=torch.uint8, generator=g)
    return torch.rand(like.shape, generator=g)


def export_path(name: str, fmt: str, size: Tuple[int, int], out_dir: str) -> str:
    """Where :func:`export` writes ``name`` (a target name) in ``fmt`` at ``size``."""
    return osp.join(out_dir, f'{name}_{size[0]}x{size[1]}{get_format(fmt).suffix}')


def export(target: Target, fmt: str, out_dir: str, example: Optional[torch.Tensor] = None,
           calibration: Optional[Sequence[torch.Tensor]] = None) -> ExportResult:
    """Export ``target`` to ``fmt`` under ``out_dir`` and check it against eager PyTorch
    (the quantised model for int8) wherever this machine can run the format."""
    spec = get_format(fmt)
    require(fmt)
    os.makedirs(out_dir, exist_ok=True)
    h, w = target.size
    x = example if example is not None else torch.rand(1, 3, h, w, generator=torch.Generator().manual_seed(0))
    if spec.adapt is not None:  # the format's own input / outputs (Core ML: an image input)
        target, x = spec.adapt(target, x)
    module = target.module.eval()
    check_values(dict(module.state_dict()), f'{target.name}\'s weights')
    start = time.time()
    path = export_path(target.name, fmt, (h, w), out_dir)
    if spec.quantized:
        calib = calibration or [_random_input(x, seed) for seed in range(8)]
        # end-to-end models quantise their network only (post-processing stays float)
        quantize = getattr(module, 'quantize_int8', None)
        module = quantize(x, calib) if quantize is not None else quantize_int8(module, x, calib)
    written = spec.write(module, x, path)
    seconds = time.time() - start
    result = ExportResult(fmt, path, file_size(path), seconds, delegated_fraction=written.delegated_fraction,
                          not_delegated=written.not_delegated, note=written.note, planned_bytes=written.planned_bytes)
    outputs = written.outputs
    if outputs is None and spec.runner is not None:
        outputs = spec.runner(path, None)(x)
    if outputs is not None:
        with torch.no_grad():
            eager = _flat(module(x))
        result.max_abs_diff, result.max_rel_diff = compare(eager, outputs)
    return result


def calibration_images(folder: str, size: Tuple[int, int], count: int = 16,
                       uint8: bool = False) -> List[torch.Tensor]:
    """Up to ``count`` .jpg / .png images of ``folder``, resized to ``size`` and normalised
    as the configs do, for int8 calibration; with ``uint8`` as they are, ``[1, H, W, 3]`` RGB
    (the input of end-to-end models)."""
    import mmcv
    paths = sorted(glob.glob(osp.join(folder, '*.jpg')) + glob.glob(osp.join(folder, '*.png')))[:count]
    if not paths:
        raise FileNotFoundError(f'--calib {folder}: no .jpg/.png images found')
    mean = torch.tensor(IMAGENET_MEAN).view(3, 1, 1)
    std = torch.tensor(IMAGENET_STD).view(3, 1, 1)
    out = []
    for p in paths:
        img = mmcv.imresize(mmcv.imread(p, channel_order='rgb'), (size[1], size[0]))
        if uint8:
            out.append(torch.from_numpy(img)[None].contiguous())
            continue
        out.append(((torch.from_numpy(img).permute(2, 0, 1).float() - mean) / std)[None])
    return out
