"""The fused T5 encoder without padding in its token-wise layers (export option ``pack_encoder_tokens``).

A batch of utterances is padded to its longest row, and every projection, feed-forward and norm of
an exported encoder computes on the padding too. Only attention needs the (rows, tokens) grid:
everything else works token by token. Here the embedded tokens are packed into one sequence of
the real tokens, (1, T, d_model); each attention block unpacks its q/k/v projection back onto the
grid, attends there (the mask hides the padding as before) and packs its output again; the last
hidden state is unpacked at the end, so the graph's inputs and outputs are the ones it had. In
fp32 each real token's numbers are the same as without packing; int8 activation scales are taken
over the real tokens only (padding no longer enters their range).

Packing is a ``Compress`` of the flattened grid by the attention mask; unpacking is a ``Gather``
with each grid position's index in the packed sequence (the cumulative sum of the mask, less one),
so a padding position gets a copy of a real token, which the mask hides. Applied after fusion,
where each attention is one ``MultiHeadAttention`` fed by one ``Split`` of its q/k/v projection.
"""

from __future__ import annotations

import numpy as np

from mtop_edge.errors import ModelError
from mtop_edge.layout import ATTENTION_MASK

PREFIX = "PackedTokens"
HIDDEN = "last_hidden_state"


def _index_nodes(helper, numpy_helper, graph, bool_type: int) -> list:
    """Per batch: which grid positions are tokens, each one's packed index, and the grid's shape (B, S, -1)."""
    p = PREFIX
    graph.initializer.extend(
        numpy_helper.from_array(value, f"{p}/{name}")
        for name, value in {
            "minus_one": np.array([-1], np.int64),  # the flat mask's shape, and the grid's last axis
            "axis0": np.array(0, np.int64),
            "one": np.array(1, np.int64),
            "unsqueeze": np.array([0], np.int64),
        }.items()
    )
    return [
        helper.make_node("Reshape", [ATTENTION_MASK, f"{p}/minus_one"], [f"{p}/mask"], name=f"{p}/mask"),
        helper.make_node("Cast", [f"{p}/mask"], [f"{p}/keep"], name=f"{p}/keep", to=bool_type),
        helper.make_node("CumSum", [f"{p}/mask", f"{p}/axis0"], [f"{p}/count"], name=f"{p}/count"),
        helper.make_node("Sub", [f"{p}/count", f"{p}/one"], [f"{p}/index"], name=f"{p}/index"),
        helper.make_node("Shape", [ATTENTION_MASK], [f"{p}/grid"], name=f"{p}/grid"),
        helper.make_node("Concat", [f"{p}/grid", f"{p}/minus_one"], [f"{p}/shape"], name=f"{p}/shape", axis=0),
    ]


def _pack(helper, grid: str, packed: str) -> list:
    """(B, S, W) -> (1, T, W): the real tokens, in order."""
    p = PREFIX
    return [
        helper.make_node("Flatten", [grid], [f"{packed}/rows"], name=f"{packed}/rows", axis=2),
        helper.make_node("Compress", [f"{packed}/rows", f"{p}/keep"], [f"{packed}/tokens"], name=packed, axis=0),
        helper.make_node("Unsqueeze", [f"{packed}/tokens", f"{p}/unsqueeze"], [packed], name=f"{packed}/one"),
    ]


def _unpack(helper, packed: str, grid: str) -> list:
    """(1, T, W) -> (B, S, W): each token back at its grid position, padding filled from a real token."""
    p = PREFIX
    return [
        helper.make_node("Flatten", [packed], [f"{grid}/tokens"], name=f"{grid}/tokens", axis=2),
        helper.make_node("Gather", [f"{grid}/tokens", f"{p}/index"], [f"{grid}/rows"], name=grid, axis=0),
        helper.make_node("Reshape", [f"{grid}/rows", f"{p}/shape"], [grid], name=f"{grid}/grid"),
    ]


def pack_encoder_tokens(model) -> int:
    """Rewrite the fused encoder ``model`` in place (see the module docstring); returns its attention count.

    Raises:
        ModelError: the graph is not a fused T5 encoder this rewrite knows (nothing is changed then).
    """
    from onnx import TensorProto, helper, numpy_helper

    graph = model.graph
    nodes = list(graph.node)
    producer = {output: node for node in nodes for output in node.output}
    norms = [n for n in nodes if n.op_type == "SimplifiedLayerNormalization"]
    attentions = [n for n in nodes if n.op_type == "MultiHeadAttention"]
    if not norms or not attentions or HIDDEN not in producer or ATTENTION_MASK not in {i.name for i in graph.input}:
        raise ModelError("pack_encoder_tokens: not a fused T5 encoder (no norms, attention or last_hidden_state)")
    splits = []
    for attention in attentions:
        split = producer.get(attention.input[0])
        if (
            split is None
            or split.op_type != "Split"
            or list(split.output) != list(attention.input[:3])
            or split.input[0] not in producer
        ):
            raise ModelError(
                f"pack_encoder_tokens: {attention.name}'s query/key/value are not one Split of a projection"
            )
        splits.append(split)
    embedded = norms[0].input[0]
    if embedded not in producer:
        raise ModelError("pack_encoder_tokens: the first norm does not read a computed embedding")

    after: dict[int, list] = {}  # id(node) -> the nodes to insert after it
    packed_embedding = f"{PREFIX}/{embedded}"
    for node in nodes:  # the layers read the packed embedding
        node.input[:] = [packed_embedding if name == embedded else name for name in node.input]
    after.setdefault(id(producer[embedded]), []).extend(_pack(helper, embedded, packed_embedding))
    for split in splits:  # each attention's projection back onto the grid
        projection = split.input[0]
        split.input[0] = f"{PREFIX}/{projection}"
        after.setdefault(id(producer[projection]), []).extend(_unpack(helper, projection, split.input[0]))
    for attention in attentions:  # and its output packed again
        output = attention.output[0]
        attention.output[0] = f"{PREFIX}/{output}"
        after.setdefault(id(attention), []).extend(_pack(helper, attention.output[0], output))
    last = producer[HIDDEN]
    last.output[:] = [f"{PREFIX}/{HIDDEN}" if name == HIDDEN else name for name in last.output]
    after.setdefault(id(last), []).extend(_unpack(helper, f"{PREFIX}/{HIDDEN}", HIDDEN))

    ordered = _index_nodes(helper, numpy_helper, graph, TensorProto.BOOL)
    for node in nodes:
        ordered.append(node)
        ordered.extend(after.get(id(node), []))
    del graph.node[:]
    graph.node.extend(ordered)
    return len(attentions)
