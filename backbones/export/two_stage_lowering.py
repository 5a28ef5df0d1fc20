"""The passes that lower the end-to-end Mask R-CNN to ExecuTorch in bounded memory.

The in-graph RoIAlign of :mod:`.two_stage` gathers one feature cell at a time in ExecuTorch
exports (:func:`~.two_stage.gathers_per_cell`), each step a :class:`~.two_stage.CellStep`.
ExecuTorch's memory plan keeps a tensor alive from the operator that makes it to the last one
that reads it, in the order of the lowered graph; these passes keep each gathered cell's life
to its own step. Both leave the operations and their order of arithmetic as they are, so the
outputs are unchanged.
"""
from __future__ import annotations


def _in_module(node, cls: type) -> bool:
    """``node`` was traced inside a module of class ``cls`` (its ``nn_module_stack``)."""
    name = f'{cls.__module__}.{cls.__qualname__}'  # as torch.export records it: (path, type name)
    return any(entry[1] == name for entry in (node.meta.get('nn_module_stack') or {}).values())


def cell_step_partitioner():
    """An XNNPACK partitioner, run before the general one, that gives every operator of the
    RoIAlign's per-cell steps (:class:`~.two_stage.CellStep`) an XNNPACK call of its own.
    Left to the general partitioner, all steps of a RoIAlign join one call, which needs all
    its gathered cells at once, which makes the memory plan grow with the number of cells.
    One call per operator frees each cell after its step."""
    from executorch.backends.xnnpack.partition.xnnpack_partitioner import XnnpackPartitioner
    from .two_stage import CellStep

    class CellStepPartitioner(XnnpackPartitioner):
        def __init__(self) -> None:
            super().__init__(per_op_mode=True)

        def get_matched_nodes_from_configs(self, ep):
            return [group for group in super().get_matched_nodes_from_configs(ep)
                    if all(_in_module(node, CellStep) for node in group if node.op == 'call_function')
                    and any(node.op == 'call_function' for node in group)]

    return CellStepPartitioner()


def order_depth_first(graph_module) -> None:
    """Re-orders the lowered graph depth first from its outputs (each operator's inputs in
    argument order, then the operator): a valid order, so the results are unchanged.
    Lowering sorts the graph breadth first, which puts all of a RoIAlign's gathers and
    per-cell products ahead of the sums that consume them; ExecuTorch's memory plan follows
    the graph's order, so they would all be alive at once. Depth first, each cell is gathered,
    weighted and added before the next is gathered."""
    graph = graph_module.graph
    nodes = list(graph.nodes)
    output = next(n for n in reversed(nodes) if n.op == 'output')
    order, seen = [], {n for n in nodes if n.op == 'placeholder'}
    stack = [(output, False)]
    while stack:
        node, done = stack.pop()
        if done:
            order.append(node)
        elif node not in seen:
            seen.add(node)
            stack.append((node, True))
            stack.extend((n, False) for n in reversed(node.all_input_nodes) if n not in seen)
    order += [n for n in nodes if n not in seen and n.op != 'placeholder']  # outputs' non-ancestors
    for node in order:
        if node is not output:
            output.prepend(node)
    graph.lint()
    graph_module.recompile()
