"""Decoder steps attend to the encoder in groups of rows of similar length (export option ``cross_attention_groups``).

A step's cross-attention reads every layer's keys/values over the batch's (rows, longest row)
grid, and in a batch of mixed lengths most of that grid is padding (41% of it is real tokens in
32-row calls of the bench sample, 23% in 128-row calls). Here the step graph takes the keys/values
and the encoder attention mask as G inputs each, one per group of rows, each group padded only to
its own longest row: the query is split by rows into the groups, each group attends on its own,
and the outputs are joined again. Everything else in the step sees the whole batch as before, so
each row's numbers are those of the ungrouped graph.

The runtime sorts a batch by length and cuts it into G runs (`runtime/row_groups.py`); a group
may be empty, for calls of fewer rows than groups. Group ``k`` of input ``name`` is
``name.group{k}`` (`layout.group_name`). Applied to the fused step graph, where each
cross-attention is one ``MultiHeadAttention`` reading the keys/values (or their float32 casts,
`cross_kv.store_cross_kv_fp16`) and the mask (through its int32 cast).
"""

from __future__ import annotations

import shutil
from pathlib import Path

from mtop_edge.errors import ModelError
from mtop_edge.layout import CROSS, DECODER_WITH_PAST, ENCODER_ATTENTION_MASK, PAST, UNGROUPED_STEP, group_name

PREFIX = "RowGroups"
# calls of at most this many rows run the step without groups (`UNGROUPED_STEP`): up to 8 rows
# it was faster on the mT5-small shape and edge-tiny-h200, level at 16, slower at 32
# (benchmarks/README.md, "Cross-attention in row groups")
UNGROUPED_ROWS = 16
KEY, VALUE, MASK = 1, 2, 4  # MultiHeadAttention's input slots


def _grouped_inputs(graph) -> list:
    cross = [i for i in graph.input if i.name.startswith(PAST + ".") and f".{CROSS}." in i.name]
    mask = [i for i in graph.input if i.name == ENCODER_ATTENTION_MASK]
    if not cross or not mask:
        raise ModelError("cross_attention_groups: the step graph reads no cross keys/values or encoder mask")
    return [*cross, *mask]


def _chains(graph, inputs: list) -> tuple[dict[str, list], list]:
    """Per grouped input, the Cast nodes between it and the attentions; and the attentions reading them.

    Raises:
        ModelError: something other than a Cast or a cross-attention's key/value/mask slot reads one.
    """
    consumers: dict[str, list] = {}
    for node in graph.node:
        for slot, name in enumerate(node.input):
            consumers.setdefault(name, []).append((node, slot))
    chains, attentions = {}, {}
    for graph_input in inputs:
        chain, frontier = [], [graph_input.name]
        while frontier:
            name = frontier.pop()
            for node, slot in consumers.get(name, []):
                if node.op_type == "Cast":
                    chain.append(node)
                    frontier.append(node.output[0])
                elif node.op_type == "MultiHeadAttention" and slot in (KEY, VALUE, MASK):
                    attentions[id(node)] = node
                else:
                    raise ModelError(
                        f"cross_attention_groups: {graph_input.name} is read by {node.op_type} {node.name!r}, "
                        "not only by cross-attentions"
                    )
        chains[graph_input.name] = chain
    return chains, list(attentions.values())


def _group_input(graph_input, k: int):
    """Group ``k``'s copy of a grouped graph input: its own rows and encoder length."""
    copy = type(graph_input)()
    copy.CopyFrom(graph_input)
    copy.name = group_name(graph_input.name, k)
    dims = copy.type.tensor_type.shape.dim
    length_axis = len(dims) - (2 if graph_input.name != ENCODER_ATTENTION_MASK else 1)
    dims[0].dim_param = f"group{k}_rows"
    dims[length_axis].dim_param = f"group{k}_encoder_length"
    return copy


def group_cross_attention(model, groups: int) -> int:
    """Rewrite the fused step graph ``model`` in place (see the module docstring); returns its cross-attention count.

    Raises:
        ModelError: the graph is not a fused step graph this rewrite knows (nothing is changed then).
    """
    import numpy as np
    from onnx import helper, numpy_helper

    if groups < 2:
        raise ModelError(f"cross_attention_groups: {groups} group(s) need no rewrite")
    graph = model.graph
    inputs = _grouped_inputs(graph)
    chains, attentions = _chains(graph, inputs)
    if not attentions:
        raise ModelError("cross_attention_groups: no MultiHeadAttention reads the cross keys/values")
    grouped = set(chains) | {n.output[0] for c in chains.values() for n in c}
    cast_ids = {id(n) for c in chains.values() for n in c}

    def renamed(name: str, k: int) -> str:
        return group_name(name, k) if name in grouped else name

    head = []  # per group: its casts, and its row count (Shape -> Gather: any opset)
    graph.initializer.append(numpy_helper.from_array(np.array([0], np.int64), f"{PREFIX}/first"))
    for k in range(groups):
        for chain in chains.values():
            for cast in chain:
                copy = type(cast)()
                copy.CopyFrom(cast)
                copy.name = f"{cast.name}/group{k}"
                copy.input[:] = [renamed(n, k) for n in cast.input]
                copy.output[:] = [renamed(n, k) for n in cast.output]
                head.append(copy)
        mask = group_name(ENCODER_ATTENTION_MASK, k)
        head += [
            helper.make_node("Shape", [mask], [f"{PREFIX}/shape{k}"], name=f"{PREFIX}/shape{k}"),
            helper.make_node(
                "Gather", [f"{PREFIX}/shape{k}", f"{PREFIX}/first"], [f"{PREFIX}/rows{k}"], name=f"{PREFIX}/rows{k}"
            ),
        ]
    rows = f"{PREFIX}/rows"
    head.append(helper.make_node("Concat", [f"{PREFIX}/rows{k}" for k in range(groups)], [rows], name=rows, axis=0))

    attention_ids = {id(n) for n in attentions}
    body = []
    for node in graph.node:
        if id(node) in cast_ids:
            continue
        if id(node) not in attention_ids:
            body.append(node)
            continue
        query, output = node.input[0], node.output[0]
        parts = [f"{query}/group{k}" for k in range(groups)]
        body.append(helper.make_node("Split", [query, rows], parts, name=f"{node.name}/split", axis=0))
        for k in range(groups):
            copy = type(node)()
            copy.CopyFrom(node)
            copy.name = f"{node.name}/group{k}"
            copy.input[:] = [parts[k], *(renamed(n, k) for n in node.input[1:])]
            copy.output[:] = [f"{output}/group{k}"]
            body.append(copy)
        body.append(
            helper.make_node(
                "Concat", [f"{output}/group{k}" for k in range(groups)], [output], name=f"{node.name}/join", axis=0
            )
        )
    names = {i.name for i in inputs}
    new_inputs = []
    for graph_input in graph.input:
        if graph_input.name in names:
            new_inputs.extend(_group_input(graph_input, k) for k in range(groups))
        else:
            new_inputs.append(graph_input)
    del graph.input[:]
    graph.input.extend(new_inputs)
    del graph.node[:]
    graph.node.extend([*head, *body])
    return len(attentions)


def copy_ungrouped_step(directory: Path) -> str:
    """Keep the step graph as it is, before grouping, for calls of a few rows; returns its file name.

    Its weights are the step's (``share_weights`` stores them once), so it costs a graph file.
    """
    shutil.copyfile(directory / DECODER_WITH_PAST, directory / UNGROUPED_STEP)
    return UNGROUPED_STEP


def group_step(directory: Path, groups: int) -> int:
    """`group_cross_attention` on the export's step graph file; returns its cross-attention count."""
    import onnx

    path = directory / DECODER_WITH_PAST
    model = onnx.load(str(path), load_external_data=False)
    count = group_cross_attention(model, groups)
    onnx.save(model, str(path))
    return count
