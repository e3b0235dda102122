"""ONNX graphs: optimum export with past key/values, merging, int8/fp16 conversion, offline optimization."""

from __future__ import annotations

import contextlib
import io
import logging
import shutil
import warnings
from collections.abc import Callable
from pathlib import Path

from mtop_edge.export.options import DecoderWeights, Quantization
from mtop_edge.layout import DECODER, DECODER_MERGED, DECODER_WITH_PAST, ENCODER, SMALL_BATCH_STEP

# T5's feed-forward output and its RMS norms overflow in fp16 (activations pass 65504); keep them fp32.
# The RMS norms' math ops are kept (their epsilon Add too: the mean of squares overflows first), and the
# fp32 -> fp16 -> fp32 Cast pairs the converter puts between two kept nodes are removed afterwards:
# the squares of a residual stream above 256 would overflow in that round trip (measured on the
# default model: all-zero logits before this).
FP16_BLOCKED_OPS = ["Pow", "ReduceMean", "Sqrt", "Reciprocal", "Div", "Softmax"]
FP16_BLOCKED_NODE_PATTERNS = ("DenseReluDense/wo", "layer_norm/Add")
# Nodes named so stay fp32 in int8 exports: fusion's position-bias tables (export/fusion.py).
KEEP_FP32 = "PositionBias_"


@contextlib.contextmanager
def quiet():
    """Silence the exporters' tracer warnings and progress chatter (our own output says what happened)."""
    # the quantizer logs its "consider pre-processing" advice on the root logger
    loggers = [logging.getLogger(name) for name in ("optimum", "transformers", "torch.onnx", "onnxruntime", None)]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
            warnings.simplefilter("ignore")
            yield
    finally:
        for lg, level in zip(loggers, levels, strict=True):
            lg.setLevel(level)


def export_onnx(model, out: Path, *, opset: int = 0, merged: bool = False) -> list[str]:
    """Encoder, first-step decoder and decoder-with-past (or one merged decoder) into ``out``.

    The first-step decoder also returns the cross-attention keys/values, which the with-past
    decoder takes as inputs: they are computed once per utterance.
    """
    from optimum.exporters.onnx import onnx_export_from_model

    with quiet():
        onnx_export_from_model(
            model,
            output=out,
            task="text2text-generation-with-past",
            opset=opset or None,
            no_post_process=True,
            do_validation=False,
        )
    if not merged:
        return [ENCODER, DECODER, DECODER_WITH_PAST]
    from optimum.onnx import merge_decoders

    with quiet():
        merge_decoders(
            decoder=out / DECODER,
            decoder_with_past=out / DECODER_WITH_PAST,
            save_path=out / DECODER_MERGED,
            strict=False,
        )
    (out / DECODER).unlink()
    (out / DECODER_WITH_PAST).unlink()
    return [ENCODER, DECODER_MERGED]


INT4_BLOCK = 128  # weights per scale; block 32 was slower at batch 1 (benchmarks/README.md, "4-bit decoder weights")
INT4_ACCURACY_LEVEL = 4  # int8 activations in the kernel (level 1, fp32, was slower than int8 weights)
# decoder_weights = per-batch: calls of at most this many rows run the 4-bit step; at the mT5-small
# shape it was faster up to 2 rows, level at 3-4 and slower from 6 (benchmarks/README.md, issue 32)
SMALL_BATCH_ROWS = 4


def quantize_int4(source: Path, target: Path) -> int:
    """Every weight MatMul of one graph as a 4-bit MatMulNBits (symmetric, per block): half the bytes
    of int8, which is what a memory-bound decoder step at batch 1 reads. Returns the count."""
    import onnx
    from onnxruntime.quantization.matmul_nbits_quantizer import MatMulNBitsQuantizer

    model = onnx.load(str(source))
    with quiet():
        quantizer = MatMulNBitsQuantizer(
            model, bits=4, block_size=INT4_BLOCK, is_symmetric=True, accuracy_level=INT4_ACCURACY_LEVEL
        )
        quantizer.process()
    quantized = quantizer.model.model
    onnx.save(quantized, str(target), save_as_external_data=True, location=target.name + ".data")
    return sum(node.op_type == "MatMulNBits" for node in quantized.graph.node)


def quantize_int8(
    source: Path,
    target: Path,
    files: list[str],
    quantization: Quantization,
    op_types: Callable[[str, bool], tuple[str, ...]],
    *,
    subgraphs: bool = False,
) -> dict:
    """Dynamic int8 quantization of each graph's ``op_types(file, embeddings)``; with
    ``decoder_weights`` int4 the decoders get 4-bit MatMulNBits weights first (their Gathers are still
    int8); with per-batch the step graph is written twice, int8 and 4-bit (`SMALL_BATCH_STEP`).

    Signed int8 weights with ``reduce_range`` stay accurate on AVX2-only CPUs, where full-range
    signed weights saturate in the u8 x s8 multiply without VNNI; ``subgraphs`` (EnableSubgraph)
    reaches into a merged decoder's If.
    """
    import onnx
    from onnxruntime.quantization import QuantType, quantize_dynamic

    weights = quantization.decoder_weights
    # (source graph, target name, 4-bit weights): every file, then per-batch's 4-bit twin of the step
    jobs = [(name, name, weights is DecoderWeights.INT4 and name != ENCODER) for name in files]
    if weights is DecoderWeights.PER_BATCH:
        jobs.append((DECODER_WITH_PAST, SMALL_BATCH_STEP, True))
    details = {
        "op_types": {name: list(op_types(name, quantization.embeddings)) for name in files},
        "weight_type": quantization.weight_type,
        "per_channel": quantization.per_channel,
        "reduce_range": quantization.reduce_range,
        "MatMulConstBOnly": True,
        "EnableSubgraph": subgraphs,
    }
    if any(four for *_, four in jobs):
        details["int4"] = {"block_size": INT4_BLOCK, "accuracy_level": INT4_ACCURACY_LEVEL, "matmuls": {}}
    with quiet():
        for name, target_name, four_bits in jobs:
            graph_source = source / name
            if four_bits:
                graph_source = target / f"int4-{target_name}"  # an intermediate: int8 Gathers come next
                details["int4"]["matmuls"][target_name] = quantize_int4(source / name, graph_source)
            # the position-bias tables: a few KB, exact in fp32, and the decoder's holds float32's minimum
            graph = onnx.load(str(graph_source), load_external_data=False).graph
            keep = [n.name for n in graph.node if n.name.startswith(KEEP_FP32)]
            quantize_dynamic(
                graph_source,
                target / target_name,
                op_types_to_quantize=list(op_types(name, quantization.embeddings)),
                per_channel=quantization.per_channel,
                reduce_range=quantization.reduce_range,
                nodes_to_exclude=keep,
                weight_type=QuantType.QUInt8 if quantization.weight_type == "uint8" else QuantType.QInt8,
                extra_options={
                    "MatMulConstBOnly": True,
                    "EnableSubgraph": subgraphs,
                    # onnx shape inference types no output of the fused com.microsoft nodes
                    "DefaultTensorType": onnx.TensorProto.FLOAT,
                },
            )
            if graph_source != source / name:
                graph_source.unlink()
                graph_source.with_name(graph_source.name + ".data").unlink()
    return details


def convert_fp16(source: Path, target: Path, files: list[str]) -> dict:
    """fp16 weights and math for CUDA, with overflow-prone nodes kept in fp32 and fp32 inputs/outputs."""
    import onnx
    from onnxruntime.transformers.float16 import convert_float_to_float16
    from onnxruntime.transformers.onnx_model import OnnxModel

    blocked_nodes: list[str] = []
    for name in files:
        model = onnx.load(str(source / name))
        nodes = [n.name for n in _all_nodes(model.graph) if any(p in n.name for p in FP16_BLOCKED_NODE_PATTERNS)]
        blocked_nodes.extend(nodes)
        with quiet():
            converted = OnnxModel(
                convert_float_to_float16(
                    model, keep_io_types=True, op_block_list=FP16_BLOCKED_OPS, node_block_list=nodes
                )
            )
            converted.remove_cascaded_cast_nodes()
            converted.remove_useless_cast_nodes()
        onnx.save(converted.model, str(target / name))
    return {"blocked_op_types": FP16_BLOCKED_OPS, "blocked_nodes": len(blocked_nodes), "io_types": "float32"}


def _all_nodes(graph):
    for node in graph.node:
        yield node
        for attribute in node.attribute:
            if attribute.HasField("g"):
                yield from _all_nodes(attribute.g)


def optimize_offline(directory: Path, files: list[str], level: str) -> None:
    """Save onnxruntime's optimized graph in place of each file (load-time work done once)."""
    import onnxruntime as ort

    levels = {
        "basic": ort.GraphOptimizationLevel.ORT_ENABLE_BASIC,
        "extended": ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED,
    }
    for name in files:
        path = directory / name
        optimized = path.with_suffix(".opt.onnx")
        options = ort.SessionOptions()
        options.graph_optimization_level = levels[level]
        options.optimized_model_filepath = str(optimized)
        ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        shutil.move(optimized, path)
