"""The T5 kinds' graphs (plain, or with the pointer head): optimum's export, then graph surgery.

optimum writes the encoder, first-step and with-past decoders; a pointer-head model gets its
pointer nodes (``pointer_head.py``); with the encoder-cross-kv layout the cross-attention
projections move into the encoder (``cross_kv.py``); ``fusion.py`` fuses attention, norms and GELU.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from mtop_edge.core.spec import PointerSpec
from mtop_edge.export import cross_kv, fusion, graphs, pointer_head
from mtop_edge.export.options import ExportOptions, Precision
from mtop_edge.export.trim import trimmed
from mtop_edge.layout import DECODER, DECODER_WITH_PAST, ENCODER, DecoderLayout

PARITY_NEEDS_FRESH_MODEL = True  # optimum's exporter patches the model it exports and its config


@dataclass
class Graphs:
    """What a kind's graph builder wrote into the fp32 directory."""

    files: list[str]
    manifest: dict  # entries the manifest records about them
    architecture: dict


def int8_ops(file: str, embeddings: bool) -> tuple[str, ...]:
    """What int8 quantizes in a T5 kind's graphs: weight MatMuls, and embedding Gathers if asked.

    Never "Attention": its quantized form (QAttention) has no attention-bias input, so it silently
    drops T5's relative position bias (a pointer-head model fell from 0.715 to 0.275 eval EM).
    Fusion splits the encoder's Attention back into a q/k/v MatMul (quantized here) and an MHA.
    """
    return ("MatMul", "Gather") if embeddings else ("MatMul",)


def load_model(path: Path):
    from mtop_edge.modeling.torch_engine import load_checkpoint

    return load_checkpoint(path)


def architecture(config, decoder_vocab: int, encoder_vocab: int) -> dict:
    return {
        "d_model": config.d_model,
        "num_layers": config.num_layers,
        "num_decoder_layers": config.num_decoder_layers,
        "num_heads": config.num_heads,
        "d_kv": config.d_kv,
        "encoder_vocab": encoder_vocab,
        "decoder_vocab": decoder_vocab,
    }


def write_graphs(
    model,
    spec: PointerSpec,
    options: ExportOptions,
    out: Path,
    *,
    keep_decoder: Sequence[int] | None,
    keep_encoder: Sequence[int] | None,
    log: Callable[[str], None],
) -> Graphs:
    """Export ``model`` (restored afterwards) into ``out`` as the options say."""
    pointer_model = None
    if pointer_head.is_pointer_head(model):
        pointer_model, model = model, pointer_head.plain_model(model)
    config = model.config
    decoder_vocab = len(keep_decoder) if keep_decoder else model.get_output_embeddings().out_features
    encoder_vocab = len(keep_encoder) if keep_encoder else model.get_input_embeddings().num_embeddings
    entries: dict = {}
    merged = options.layout is DecoderLayout.MERGED
    log(f"exporting ONNX (decoder vocabulary {decoder_vocab}, encoder vocabulary {encoder_vocab})")
    with trimmed(model, keep_decoder, keep_encoder):
        if pointer_model is None:
            files = graphs.export_onnx(model, out, opset=options.opset, merged=merged)
        else:
            with pointer_head.with_query_rows(model, pointer_model, keep_decoder) as first_pointer:
                files = graphs.export_onnx(model, out, opset=options.opset)
            entries["pointer_head"] = _add_pointer_head(out, spec, keep_encoder, first_pointer)
    if options.layout is DecoderLayout.ENCODER_CROSS_KV:
        log("moving the cross-attention keys/values into the encoder: one decoder graph for every step")
        entries["encoder_cross_kv"] = cross_kv.move_cross_kv_to_encoder(
            out, num_heads=config.num_heads, d_kv=config.d_kv
        )
        files = [name for name in files if name != DECODER]
    if options.fuse:
        log("fusing attention, norms and GELU (onnxruntime's T5 fusion, CPU-runnable)")
        pack = options.quantize is not Precision.INT8 or options.per_channel
        if options.pack_encoder_tokens:
            log("packing the encoder's tokens: its token-wise layers skip the padding")
        entries["fusion"] = fusion.fuse_graphs(out, config, files, pack=pack, pack_tokens=options.pack_encoder_tokens)
    return Graphs(files, entries, architecture(config, decoder_vocab, encoder_vocab))


def _add_pointer_head(directory: Path, spec: PointerSpec, keep_encoder, first_pointer: int) -> dict:
    """Graph surgery for a pointer-head model (see export/pointer_head.py); returns the manifest entry."""
    markers = list(spec.pointer_ids)
    if keep_encoder is not None:
        position = {original: i for i, original in enumerate(keep_encoder)}
        markers = [position[m] for m in markers]
    pointer_head.add_pointer_outputs(directory / ENCODER, markers)
    for name in (DECODER, DECODER_WITH_PAST):
        pointer_head.add_pointer_scores(directory / name, first_pointer, len(markers))
    return {"num_pointers": len(markers), "first_pointer": first_pointer}
