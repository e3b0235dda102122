"""One decoder graph for every step (export option ``encoder_cross_kv``).

An optimum export has two decoders: the first step's (which also projects the encoder states into
each layer's cross-attention keys and values) and the with-past one for every later step. Both hold
a copy of the decoder's weights in memory, and the first step pays for its own, cold in the cache,
on every parse. Here the cross-attention projections move to the end of the encoder graph, which
then returns the keys and values itself; the first step runs the with-past graph with an empty past,
and the first-step graph is dropped. Same numbers: the subgraph moved is the exported one.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from mtop_edge.errors import ModelError
from mtop_edge.layout import DECODER, ENCODER


def cross_present_names(decoder) -> list[str]:
    """The first-step decoder's cross-attention outputs (optimum's ``present.N.encoder.key/value``)."""
    return [o.name for o in decoder.graph.output if o.name.startswith("present.") and ".encoder." in o.name]


def _projection_weight(producer: dict, output: str) -> str:
    """The weight behind one cross-attention output: MatMul(encoder_hidden_states, W) -> ... -> output
    (``producer``: tensor name -> the decoder node that writes it)."""
    node, hops = producer.get(output), 0
    while node is not None and hops < 6:
        if node.op_type == "MatMul" and node.input[0] == "encoder_hidden_states":
            return node.input[1]
        node, hops = producer.get(node.input[0]), hops + 1
    raise ModelError(f"{output}: no projection of encoder_hidden_states found behind it")


def move_cross_kv_to_encoder(directory: Path, *, num_heads: int, d_kv: int) -> list[str]:
    """Compute the cross-attention keys/values at the end of the encoder; delete the first-step decoder.

    Each is the exported projection of the encoder states, split into heads:
    ``transpose(reshape(last_hidden_state @ W, (batch, length, heads, d_kv)), (0, 2, 1, 3))``.
    Returns the encoder's new outputs.

    Raises:
        ModelError: the first-step decoder has no cross-attention outputs to move.
    """
    import onnx
    from onnx import helper, numpy_helper

    decoder = onnx.load(str(directory / DECODER))
    names = cross_present_names(decoder)
    if not names:
        raise ModelError(f"{directory / DECODER}: no cross-attention outputs (present.N.encoder.*) to move")
    weights = {i.name: i for i in decoder.graph.initializer}
    producer = {o: n for n in decoder.graph.node for o in n.output}
    encoder = onnx.load(str(directory / ENCODER))
    graph = encoder.graph
    shape = "cross_kv_shape"
    graph.initializer.append(numpy_helper.from_array(np.array([0, -1, num_heads, d_kv], np.int64), shape))
    for name in names:
        weight = weights[_projection_weight(producer, name)]
        stored = numpy_helper.from_array(numpy_helper.to_array(weight), f"{name}.weight")
        graph.initializer.append(stored)
        graph.node.extend(
            [
                helper.make_node(
                    "MatMul", ["last_hidden_state", stored.name], [f"{name}.projected"], name=f"{name}/MatMul"
                ),
                helper.make_node("Reshape", [f"{name}.projected", shape], [f"{name}.heads"], name=f"{name}/Reshape"),
                helper.make_node("Transpose", [f"{name}.heads"], [name], name=f"{name}/Transpose", perm=[0, 2, 1, 3]),
            ]
        )
        graph.output.append(
            helper.make_tensor_value_info(
                name, onnx.TensorProto.FLOAT, ["batch_size", num_heads, "encoder_sequence_length", d_kv]
            )
        )
    onnx.save(encoder, str(directory / ENCODER))
    (directory / DECODER).unlink()
    return names
