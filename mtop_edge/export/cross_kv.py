"""One decoder graph for every step (export option ``encoder_cross_kv``), and the keys/values it hands over.

An optimum export has two decoders: the first step's (which also projects the encoder states into
each layer's cross-attention keys and values) and the with-past one for every later step. Both hold
a copy of the decoder's weights in memory, and the first step pays for its own, cold in the cache,
on every parse. Here the cross-attention projections move to the end of the encoder graph, which
then returns the keys and values itself; the first step runs the with-past graph with an empty past,
and the first-step graph is dropped. Same numbers: the subgraph moved is the exported one.

`store_cross_kv_fp16` (export option ``cross_kv_dtype = float16``) then hands those keys/values over
in float16: the encoder casts them once per batch, each decoder step casts them back before its
attention. A step reads every layer's cross keys/values, and at 32 rows these are as many bytes as
the decoder's int8 weights, so halving them is what a batched step saves (benchmarks/README.md).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from mtop_edge.errors import ModelError
from mtop_edge.layout import CROSS, DECODER, ENCODER, PAST, PRESENT

FP16_SUFFIX = "/float32"  # the float32 tensor behind each float16 cross key/value


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


def _cross(name: str, prefix: str) -> bool:
    return name.startswith(prefix + ".") and f".{CROSS}." in name


def store_cross_kv_fp16(directory: Path, decoders: list[str]) -> list[str]:
    """The encoder's cross keys/values become float16 outputs, and the ``decoders``' inputs; returns their names.

    The encoder gets a ``Cast`` to float16 after each; each decoder declares them float16 and casts
    them back to float32 first, so everything after the casts is the graph it was.

    Raises:
        ModelError: the encoder returns no cross keys/values, or a decoder does not read them.
    """
    import onnx
    from onnx import TensorProto, helper

    encoder = onnx.load(str(directory / ENCODER), load_external_data=False)
    outputs = [o for o in encoder.graph.output if _cross(o.name, PRESENT)]
    if not outputs:
        raise ModelError(f"{directory / ENCODER}: no cross keys/values (present.N.encoder.*) to store in float16")
    for output in outputs:
        for node in encoder.graph.node:
            node.output[:] = [n + FP16_SUFFIX if n == output.name else n for n in node.output]
        encoder.graph.node.append(
            helper.make_node(
                "Cast",
                [output.name + FP16_SUFFIX],
                [output.name],
                name=f"{output.name}/float16",
                to=TensorProto.FLOAT16,
            )
        )
        output.type.tensor_type.elem_type = TensorProto.FLOAT16
    onnx.save(encoder, str(directory / ENCODER))
    for name in decoders:
        decoder = onnx.load(str(directory / name), load_external_data=False)
        inputs = [i for i in decoder.graph.input if _cross(i.name, PAST)]
        if len(inputs) != len(outputs):
            raise ModelError(
                f"{directory / name}: reads {len(inputs)} cross keys/values, the encoder returns {len(outputs)}"
            )
        casts = []
        for graph_input in inputs:
            for node in decoder.graph.node:
                node.input[:] = [n + FP16_SUFFIX if n == graph_input.name else n for n in node.input]
            casts.append(
                helper.make_node(
                    "Cast",
                    [graph_input.name],
                    [graph_input.name + FP16_SUFFIX],
                    name=f"{graph_input.name}/float32",
                    to=TensorProto.FLOAT,
                )
            )
            graph_input.type.tensor_type.elem_type = TensorProto.FLOAT16
        nodes = [*casts, *decoder.graph.node]
        del decoder.graph.node[:]
        decoder.graph.node.extend(nodes)
        onnx.save(decoder, str(directory / name))
    return [o.name for o in outputs]
