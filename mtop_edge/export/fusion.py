"""Fused attention that runs on onnxruntime's CPU kernels (export option ``fuse``).

onnxruntime's transformer optimizer (model type t5) turns each attention block into one
``Attention`` (encoder) or ``MultiHeadAttention`` (decoder, past/present in the node) and fuses the
RMS norms with their residual adds and the tanh GELU. Four things keep its output off the CPU or
slow there, and this module handles each:

- its decoder fusion recognises onnxruntime's own past/present names (``past_key_self_0``, ...),
  not optimum's (``past_key_values.0.decoder.key``, ...): names are mapped before and restored after,
  so the runtime and optimum see the same graph interface as without fusion;
- the ``RelativePositionBias`` node it emits has a CUDA kernel only: it is replaced by the bias per
  relative distance (2 x max_distance + 1 rows, T5's buckets looked up once at export) gathered with
  a handful of index ops, which the CPU runs and which gives the same numbers;
- the exported decoder rebuilds its self-attention bias and causal mask in some 60 shape and mask
  nodes on every step: one small subgraph from the past length and the new tokens replaces them,
  with the mask folded into the bias table (with-past step 173 -> 93 nodes after onnxruntime's own
  optimization, on edge-tiny-h200); the tables stay fp32 when the rest is quantized;
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
from mtop_edge.export.graphs import KEEP_FP32 as POSITION_BIAS
from mtop_edge.export.graphs import quiet
from mtop_edge.export.packed_tokens import pack_encoder_tokens
from mtop_edge.layout import ENCODER

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


def _stored_table(model, node) -> np.ndarray:
    """A RelativePositionBias node's (num_buckets, heads) embedding."""
    from onnx import numpy_helper

    stored = next(i for i in model.graph.initializer if i.name == node.input[0])
    # the fusion stores the (num_buckets, heads) table's transpose under the original dims
    buckets, heads = stored.dims
    return numpy_helper.to_array(stored).reshape(heads, buckets).T


def _constants(model, prefix: str, values: dict[str, np.ndarray]) -> dict[str, str]:
    from onnx import numpy_helper

    model.graph.initializer.extend(numpy_helper.from_array(v, f"{prefix}_{k}") for k, v in values.items())
    return {k: f"{prefix}_{k}" for k in values}


def _bidirectional(node) -> bool:
    """A RelativePositionBias node's direction: True in the encoder, False in the decoder."""
    from onnx import helper

    return bool(next(helper.get_attribute_value(a) for a in node.attribute if a.name == "is_bidirectional"))


def _replace_node(graph, node, nodes: list) -> None:
    position = list(graph.node).index(node)
    graph.node.remove(node)
    for offset, new_node in enumerate(nodes):
        graph.node.insert(position + offset, new_node)


def _bias_gather(prefix: str, c: dict[str, str], queries: tuple[str, str], keys: str, offset: str, output: str) -> list:
    """Nodes for bias[0, h, i, j] = table[clip(j - p_i, low, high) + offset, h]: query positions p_i in
    ``queries`` (start, end), key positions 0..``keys``; ``c`` names the constants (table, zero, one,
    low, high, axis0, axis1)."""
    from onnx import helper

    t = {k: f"{prefix}_{k}" for k in ("q", "k", "q_col", "distance", "clipped", "row", "lkh", "hlk")}
    return [
        helper.make_node("Range", [queries[0], queries[1], c["one"]], [t["q"]]),
        helper.make_node("Range", [c["zero"], keys, c["one"]], [t["k"]]),
        helper.make_node("Unsqueeze", [t["q"], c["axis1"]], [t["q_col"]]),
        helper.make_node("Sub", [t["k"], t["q_col"]], [t["distance"]]),
        helper.make_node("Clip", [t["distance"], c["low"], c["high"]], [t["clipped"]]),
        helper.make_node("Add", [t["clipped"], offset], [t["row"]]),
        helper.make_node("Gather", [c["table"], t["row"]], [t["lkh"]], name=f"{prefix}_Gather", axis=0),
        helper.make_node("Transpose", [t["lkh"]], [t["hlk"]], perm=[2, 0, 1]),
        helper.make_node("Unsqueeze", [t["hlk"], c["axis0"]], [output]),
    ]


def replace_relative_position_bias(model, max_distance: int) -> None:
    """The encoder's RelativePositionBias node -> Gather over a bias-by-distance table.

    (The decoder's is replaced by `replace_decoder_self_bias`, which also folds in the causal mask.)
    """

    graph = model.graph
    for node in [n for n in graph.node if n.op_type == "RelativePositionBias"]:
        if not _bidirectional(node):
            continue
        by_distance = bias_by_distance(_stored_table(model, node), bidirectional=True, max_distance=max_distance)
        prefix = f"{POSITION_BIAS}{node.name}"
        c = _constants(
            model,
            prefix,
            {
                "table": by_distance,
                "zero": np.array(0, np.int64),
                "one": np.array(1, np.int64),
                "low": np.array(-max_distance, np.int64),
                "high": np.array(max_distance, np.int64),
                "axis0": np.array([0], np.int64),
                "axis1": np.array([1], np.int64),
            },
        )
        query_length, key_length = node.input[1], node.input[2]
        # bias[0, h, i, j] = table[clip(j - i) + D, h]
        nodes = _bias_gather(prefix, c, (c["zero"], query_length), key_length, c["high"], node.output[0])
        _replace_node(graph, node, nodes)


def replace_decoder_self_bias(model, max_distance: int) -> None:
    """The decoder's position bias and causal mask -> one small subgraph from the graph's inputs.

    The exported T5 decoder builds its self-attention bias in some 60 shape and mask nodes (the
    full square bias, a causal mask, a slice of the last rows) on every step, even where one row
    of it is used. Here each query position p (past length + i) gets its row directly:
    bias[0, h, i, j] = table[clip(j - p, -D, 1) + D, h], where the table's last row (distance 1,
    a future position) holds float32's minimum, the value the causal mask adds. The nodes left
    without a consumer are removed.
    """
    from onnx import helper

    graph = model.graph
    decoder = [n for n in graph.node if n.op_type == "RelativePositionBias" and not _bidirectional(n)]
    if not decoder:
        return
    if len(decoder) != 1:
        raise ModelError(f"expected one decoder position bias, found {len(decoder)}")
    node = decoder[0]
    self_attention = [n for n in graph.node if n.op_type == "MultiHeadAttention" and len(n.input) > 5 and n.input[5]]
    if not self_attention:
        raise ModelError("the fused decoder has no self-attention with a position bias")
    by_distance = bias_by_distance(_stored_table(model, node), bidirectional=False, max_distance=max_distance)
    past_to_now = by_distance[: max_distance + 1]  # distances -D..0
    future = np.full((1, past_to_now.shape[1]), np.finfo(np.float32).min, np.float32)
    inputs = {i.name for i in graph.input}
    past = "past_key_self_0" if "past_key_self_0" in inputs else None
    prefix = f"{POSITION_BIAS}decoder"
    c = _constants(
        model,
        prefix,
        {
            "table": np.concatenate([past_to_now, future]),
            "zero": np.array(0, np.int64),
            "zeros": np.zeros(1, np.int64),
            "one": np.array(1, np.int64),
            "low": np.array(-max_distance, np.int64),
            "high": np.array(1, np.int64),
            "offset": np.array(max_distance, np.int64),
            "scalar": np.zeros(0, np.int64),
            "axis0": np.array([0], np.int64),
            "axis1": np.array([1], np.int64),
        },
    )
    t = {k: f"{prefix}_{k}" for k in ("new", "past", "total", "start", "end", "bias")}
    new = [
        helper.make_node("Shape", ["input_ids"], [t["new"]], start=1, end=2),
        helper.make_node("Shape", [past], [t["past"]], start=2, end=3)
        if past
        else helper.make_node("Identity", [c["zeros"]], [t["past"]]),
        helper.make_node("Add", [t["past"], t["new"]], [t["total"]]),
        helper.make_node("Reshape", [t["past"], c["scalar"]], [t["start"]]),
        helper.make_node("Reshape", [t["total"], c["scalar"]], [t["end"]]),
        *_bias_gather(prefix, c, (t["start"], t["end"]), t["end"], c["offset"], t["bias"]),
    ]
    first = list(graph.node).index(self_attention[0])
    for offset, new_node in enumerate(new):
        graph.node.insert(first + offset, new_node)
    for attention in self_attention:
        attention.input[5] = t["bias"]


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
        _replace_node(graph, node, nodes)


def pack_parallel_matmuls(model) -> int:
    """MatMuls that multiply one input by different weights -> one MatMul over the joined weights and a Split.

    The q/k/v projections of the decoder's attention and the two input projections of the gated
    feed-forward read the same tensor: one wider MatMul does their work in one node, which at one
    token per step is where the time goes (per-node overhead, not arithmetic). Each output column
    is computed as before, so with per-channel int8 scales the quantized numbers do not change
    either. Returns the number of MatMuls removed.
    """
    from onnx import helper, numpy_helper

    graph = model.graph
    weights = {i.name: i for i in graph.initializer if len(i.dims) == 2}
    groups: dict[str, list] = {}
    for node in graph.node:
        if node.op_type == "MatMul" and node.input[1] in weights:
            groups.setdefault(node.input[0], []).append(node)
    removed = 0
    for source, nodes in groups.items():
        rows = {weights[n.input[1]].dims[0] for n in nodes}
        if len(nodes) < 2 or len(rows) != 1:
            continue
        arrays = [numpy_helper.to_array(weights[n.input[1]]) for n in nodes]
        prefix = f"{nodes[0].name or nodes[0].output[0]}_packed"
        graph.initializer.extend(
            [
                numpy_helper.from_array(np.concatenate(arrays, axis=1), f"{prefix}_weight"),
                numpy_helper.from_array(np.array([a.shape[1] for a in arrays], np.int64), f"{prefix}_sizes"),
            ]
        )
        packed = [
            helper.make_node("MatMul", [source, f"{prefix}_weight"], [f"{prefix}_output"], name=f"{prefix}_MatMul"),
            helper.make_node(
                "Split",
                [f"{prefix}_output", f"{prefix}_sizes"],
                [n.output[0] for n in nodes],
                name=f"{prefix}_Split",
                axis=-1,
            ),
        ]
        position = min(list(graph.node).index(n) for n in nodes)
        for n in nodes:
            graph.node.remove(n)
        for offset, new_node in enumerate(packed):
            graph.node.insert(position + offset, new_node)
        removed += len(nodes) - 1
    return removed


def fuse_graph(
    path: Path, *, num_heads: int, hidden_size: int, max_distance: int, pack: bool, pack_tokens: bool = False
) -> dict[str, int]:
    """Fuse one graph file in place (``pack``: also `pack_parallel_matmuls`; ``pack_tokens``: the encoder
    without padding, `packed_tokens.pack_encoder_tokens`); returns the fused operator counts."""
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
    replace_decoder_self_bias(model, max_distance)
    split_packed_attention(model)
    packed = pack_parallel_matmuls(model) if pack else 0
    unpacked_for = pack_encoder_tokens(model) if pack_tokens else 0
    fused.prune_graph(allow_remove_graph_inputs=False)
    _rename_io(model, {ort: optimum for optimum, ort in to_ort.items()})
    onnx.save(model, str(path))
    counts = Counter(n.op_type for n in model.graph.node)
    extra = {"MatMuls packed": packed} if packed else {}
    if unpacked_for:
        extra["tokens packed around attentions"] = unpacked_for
    return {**{op: counts[op] for op in FUSED_OPS if counts[op]}, **extra}


def fuse_graphs(directory: Path, config, files: list[str], *, pack: bool = True, pack_tokens: bool = False) -> dict:
    """Fuse the graph ``files`` of an fp32 export in ``directory``; returns the manifest entry.

    ``pack_tokens`` also removes the encoder's padding from its token-wise layers (`packed_tokens`).
    ``pack`` joins the decoder's parallel MatMuls (`pack_parallel_matmuls`): exact in fp32 and with
    per-channel int8 scales; one per-tensor scale over joined weights would change the quantized
    numbers. The encoder's stay apart: it runs on many rows at once, where the Split's copies cost
    more than the nodes saved (measured: benchmarks/README.md, "Fusion").
    """
    settings = {
        "num_heads": config.num_heads,
        "hidden_size": config.num_heads * config.d_kv,
        "max_distance": config.relative_attention_max_distance,
    }
    return {
        name: fuse_graph(
            directory / name, **settings, pack=pack and name != ENCODER, pack_tokens=pack_tokens and name == ENCODER
        )
        for name in files
    }
