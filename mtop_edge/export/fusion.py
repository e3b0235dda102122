"""Fused attention that runs on onnxruntime's CPU kernels (export option ``fuse``).

onnxruntime's transformer optimizer (model type t5) turns each attention block into one
``Attention`` (encoder) or ``MultiHeadAttention`` (decoder, past/present in the node) and fuses the
RMS norms with their residual adds and the tanh GELU. Two things keep its output off the CPU, and
this module handles both:

- its decoder fusion recognises onnxruntime's own past/present names (``past_key_self_0``, ...),
  not optimum's (``past_key_values.0.decoder.key``, ...): names are mapped before and restored after,
  so the runtime and optimum see the same graph interface as without fusion;
- the ``RelativePositionBias`` node it emits has a CUDA kernel only: it is replaced by the bias per
  relative distance (2 x max_distance + 1 rows, T5's buckets looked up once at export) gathered with
  a handful of index ops, which the CPU runs and which gives the same numbers;
- the encoder's fused ``Attention`` cannot be quantized as it is (``QAttention`` has no input for the
  position bias): it is split back into its packed q/k/v MatMul and a ``MultiHeadAttention``.

Fusion runs on the fp32 graphs before quantization, so fp32 parity with PyTorch checks it.
"""

from __future__ import annotations

import re
from collections import Counter
from pathlib import Path

import numpy as np

from mtop_edge.errors import ModelError
from mtop_edge.export.graphs import quiet
from mtop_edge.manifest import DECODER, DECODER_WITH_PAST, ENCODER

OPTIMUM_PAST = re.compile(r"^(past_key_values|present)\.(\d+)\.(decoder|encoder)\.(key|value)$")
FUSED_OPS = ("Attention", "MultiHeadAttention", "SkipSimplifiedLayerNormalization", "FastGelu")


def onnxruntime_name(name: str) -> str | None:
    """optimum's past/present name -> the one onnxruntime's T5 fusion looks for (None: not one)."""
    match = OPTIMUM_PAST.match(name)
    if match is None:
        return None
    kind = "past" if match[1] == "past_key_values" else "present"
    return f"{kind}_{match[4]}_{'self' if match[3] == 'decoder' else 'cross'}_{match[2]}"


def _rename_io(model, names: dict[str, str]) -> None:
    """Rename graph inputs/outputs and every node reference to them."""
    graph = model.graph
    for node in graph.node:
        node.input[:] = [names.get(n, n) for n in node.input]
        node.output[:] = [names.get(n, n) for n in node.output]
    for value in [*graph.input, *graph.output]:
        value.name = names.get(value.name, value.name)


def bias_by_distance(table: np.ndarray, *, bidirectional: bool, max_distance: int) -> np.ndarray:
    """T5's relative-position bias for distances -max_distance..max_distance: (2D+1, heads).

    ``table`` is the model's (num_buckets, heads) embedding; beyond max_distance every distance
    falls in the last bucket, so clipping the distance to that range loses nothing.
    """
    import torch
    from transformers.models.t5.modeling_t5 import T5Attention

    distance = torch.arange(-max_distance, max_distance + 1)
    buckets = T5Attention._relative_position_bucket(
        distance, bidirectional=bidirectional, num_buckets=table.shape[0], max_distance=max_distance
    )
    return table[buckets.numpy()].astype(np.float32)


def replace_relative_position_bias(model, max_distance: int) -> None:
    """Each RelativePositionBias node -> Gather over a bias-by-distance table."""
    from onnx import helper, numpy_helper

    graph = model.graph
    initializers = {i.name: i for i in graph.initializer}
    for node in [n for n in graph.node if n.op_type == "RelativePositionBias"]:
        attributes = {a.name: helper.get_attribute_value(a) for a in node.attribute}
        stored = initializers[node.input[0]]
        # the fusion stores the (num_buckets, heads) table's transpose under the original dims
        buckets, heads = stored.dims
        table = numpy_helper.to_array(stored).reshape(heads, buckets).T
        by_distance = bias_by_distance(
            table, bidirectional=bool(attributes["is_bidirectional"]), max_distance=max_distance
        )
        prefix = node.name
        constants = {
            "table": by_distance,
            "zero": np.array(0, np.int64),
            "one": np.array(1, np.int64),
            "low": np.array(-max_distance, np.int64),
            "high": np.array(max_distance, np.int64),
            "axis0": np.array([0], np.int64),
            "axis1": np.array([1], np.int64),
        }
        graph.initializer.extend(numpy_helper.from_array(v, f"{prefix}_{k}") for k, v in constants.items())
        c = {k: f"{prefix}_{k}" for k in constants}
        t = {k: f"{prefix}_{k}" for k in ("q", "k", "q_col", "distance", "clipped", "row", "lkh", "hlk")}
        query_length, key_length = node.input[1], node.input[2]
        nodes = [  # bias[0, h, i, j] = table[clip(j - i) + D, h]
            helper.make_node("Range", [c["zero"], query_length, c["one"]], [t["q"]]),
            helper.make_node("Range", [c["zero"], key_length, c["one"]], [t["k"]]),
            helper.make_node("Unsqueeze", [t["q"], c["axis1"]], [t["q_col"]]),
            helper.make_node("Sub", [t["k"], t["q_col"]], [t["distance"]]),
            helper.make_node("Clip", [t["distance"], c["low"], c["high"]], [t["clipped"]]),
            helper.make_node("Add", [t["clipped"], c["high"]], [t["row"]]),
            helper.make_node("Gather", [c["table"], t["row"]], [t["lkh"]], axis=0),
            helper.make_node("Transpose", [t["lkh"]], [t["hlk"]], perm=[2, 0, 1]),
            helper.make_node("Unsqueeze", [t["hlk"], c["axis0"]], [node.output[0]]),
        ]
        position = list(graph.node).index(node)
        graph.node.remove(node)
        for offset, new in enumerate(nodes):
            graph.node.insert(position + offset, new)
        graph.initializer.remove(stored)


def split_packed_attention(model) -> None:
    """Each encoder ``Attention`` -> its packed q/k/v ``MatMul``, a ``Split`` and a ``MultiHeadAttention``.

    Same numbers, but the q/k/v projection becomes a plain weight MatMul that int8 quantizes like
    every other: quantizing ``Attention`` itself gives ``QAttention``, which has no attention-bias
    input and would silently drop T5's relative position bias.
    """
    from onnx import helper, numpy_helper

    graph = model.graph
    widths = {i.name: i.dims[1] // 3 for i in graph.initializer if len(i.dims) == 2}
    for node in [n for n in graph.node if n.op_type == "Attention"]:
        inputs = list(node.input) + [""] * (6 - len(node.input))
        hidden, weight, bias, mask, past, position_bias = inputs[:6]
        if past:
            raise ModelError(f"{node.name}: a fused encoder Attention with past state cannot be split")
        prefix = node.name
        qkv, q, k, v, sizes = (f"{prefix}_{x}" for x in ("qkv", "q", "k", "v", "split_sizes"))
        graph.initializer.append(numpy_helper.from_array(np.full(3, widths[weight], np.int64), sizes))
        attributes = {a.name: helper.get_attribute_value(a) for a in node.attribute}
        nodes = [
            helper.make_node("MatMul", [hidden, weight], [qkv], name=f"{prefix}_qkv_MatMul"),
            helper.make_node("Split", [qkv, sizes], [q, k, v], name=f"{prefix}_Split", axis=-1),
            helper.make_node(
                "MultiHeadAttention",
                [q, k, v, bias, mask, position_bias],
                list(node.output[:1]),
                name=f"{prefix}_MultiHeadAttention",
                domain="com.microsoft",
                **{k: attributes[k] for k in ("num_heads", "scale", "mask_filter_value") if k in attributes},
            ),
        ]
        position = list(graph.node).index(node)
        graph.node.remove(node)
        for offset, new_node in enumerate(nodes):
            graph.node.insert(position + offset, new_node)


def fuse_graph(path: Path, *, num_heads: int, hidden_size: int, max_distance: int) -> dict[str, int]:
    """Fuse one graph file in place; returns the fused operator counts."""
    import onnx
    from onnxruntime.transformers.optimizer import optimize_model

    model = onnx.load(str(path))
    interface = [v.name for v in [*model.graph.input, *model.graph.output]]
    to_ort = {name: ort_name for name in interface if (ort_name := onnxruntime_name(name))}
    _rename_io(model, to_ort)
    with quiet():
        fused = optimize_model(model, model_type="t5", num_heads=num_heads, hidden_size=hidden_size, opt_level=0)
    model = fused.model
    if not any(o.domain == "com.microsoft" for o in model.opset_import):
        model.opset_import.append(onnx.helper.make_opsetid("com.microsoft", 1))
    replace_relative_position_bias(model, max_distance)
    split_packed_attention(model)
    _rename_io(model, {ort: optimum for optimum, ort in to_ort.items()})
    onnx.save(model, str(path))
    counts = Counter(n.op_type for n in model.graph.node)
    return {op: counts[op] for op in FUSED_OPS if counts[op]}


def fuse_graphs(directory: Path, config) -> dict:
    """Fuse the encoder and both decoders of an fp32 export in ``directory``; returns the manifest entry."""
    settings = {
        "num_heads": config.num_heads,
        "hidden_size": config.num_heads * config.d_kv,
        "max_distance": config.relative_attention_max_distance,
    }
    return {name: fuse_graph(directory / name, **settings) for name in (ENCODER, DECODER, DECODER_WITH_PAST)}
