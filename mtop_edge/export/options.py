"""Export options: one flat dataclass, read from a profile (export/*.toml), overridable from the CLI.

`ExportOptions.resolve` turns the options a user asked for into the ones a checkpoint can be
exported with, once, and says why for every change; `ExportOptions.quantization` is the one object
that every quantizing step reads.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from enum import Enum
from pathlib import Path
from typing import Any

from mtop_edge.config import load_config, to_toml
from mtop_edge.errors import MtopEdgeError
from mtop_edge.layout import DecoderLayout


class Precision(str, Enum):
    """What the exported weights and math are."""

    INT8 = "int8"  # dynamic int8 weight MatMuls (and embedding Gathers); activations quantized per call
    NONE = "none"  # fp32
    FP16 = "fp16"  # fp16 weights and math for CUDA, overflow-prone nodes kept in fp32


class DecoderWeights(str, Enum):
    """How the decoder's weight MatMuls are stored when ``quantize = int8``."""

    INT8 = "int8"
    INT4 = "int4"  # 4-bit MatMulNBits: half the bytes a memory-bound step reads, slower in batches
    PER_BATCH = "per-batch"  # both: the 4-bit step for calls of a few rows, the int8 one for batches


class CrossKvDtype(str, Enum):
    """How the encoder hands the cross-attention keys/values to the decoder steps (layout encoder-cross-kv)."""

    FLOAT32 = "float32"
    FLOAT16 = "float16"  # half the bytes each step reads; int8 exports of T5 kinds


CHOICES = {
    "weight_type": ("uint8", "int8"),
    "optimize": ("none", "basic", "extended"),
}
HELP = {
    "name": "profile name, recorded in the manifest",
    "quantize": "int8 (dynamic, weight MatMuls), none (fp32) or fp16 (CUDA)",
    "trim": "keep only the target vocabulary in the decoder's embedding and output layer",
    "trim_input": "keep only source pieces seen in training in the encoder embedding (unseen -> <unk>)",
    "layout": "decoder graphs: encoder-cross-kv (the encoder returns the cross keys/values, one decoder for "
    "every step), separate (first-step and with-past decoders) or merged (one decoder with an If)",
    "weight_type": "int8 weights: int8 (signed; with reduce_range on AVX2-only CPUs too) or uint8",
    "per_channel": "per-channel weight scales for int8",
    "decoder_weights": "int4: the decoder's weight MatMuls as 4-bit MatMulNBits (blocks of 128, int8 compute); "
    "per-batch: a second, 4-bit step graph that the runtime runs for calls of a few rows (encoder-cross-kv)",
    "reduce_range": "7-bit weights: signed int8 weights cannot saturate on AVX2-only CPUs",
    "quantize_embeddings": "also quantize embedding Gathers (smaller files; off: weight MatMuls only)",
    "optimize": "offline onnxruntime graph optimization saved into the files",
    "fuse": "fused attention, norm and GELU nodes (onnxruntime's transformer fusions, made to run on the CPU)",
    "pack_encoder_tokens": "the encoder's projections, feed-forwards and norms skip the padding of a batch "
    "(packed in the graph around each attention; T5 kinds, fuse = true)",
    "cross_kv_dtype": "float16: the encoder returns the cross-attention keys/values in float16 and each decoder step "
    "casts them back (int8 exports of T5 kinds with layout encoder-cross-kv); float32: as computed",
    "cross_attention_groups": "decoder steps attend to the encoder in this many groups of rows of similar length, "
    "each over its own longest row (fused T5 exports with layout encoder-cross-kv; 1: one padded grid)",
    "share_weights": "store each weight once in weights.bin (the two decoders share theirs)",
    "opset": "ONNX opset (0 = the exporter's default)",
    "parity_rows": "utterances for the parity check at the end (0 = skip)",
}


@dataclass(frozen=True)
class Quantization:
    """Everything that says how the weights are stored (`ExportOptions.quantization`)."""

    precision: Precision
    weight_type: str = "int8"
    per_channel: bool = True
    reduce_range: bool = True
    decoder_weights: DecoderWeights = DecoderWeights.INT8
    embeddings: bool = True

    def to_json(self) -> dict:
        enums = {"precision": self.precision.value, "decoder_weights": self.decoder_weights.value}
        return {**dataclasses.asdict(self), **enums}


@dataclass(frozen=True)
class ExportOptions:
    name: str = "custom"
    quantize: Precision = Precision.INT8
    trim: bool = True
    trim_input: bool = False
    layout: DecoderLayout = DecoderLayout.ENCODER_CROSS_KV
    weight_type: str = "int8"
    per_channel: bool = True
    reduce_range: bool = True
    decoder_weights: DecoderWeights = DecoderWeights.INT8
    quantize_embeddings: bool = True
    optimize: str = "none"
    fuse: bool = True
    pack_encoder_tokens: bool = True
    cross_kv_dtype: CrossKvDtype = CrossKvDtype.FLOAT16
    cross_attention_groups: int = 4
    share_weights: bool = True
    opset: int = 0
    parity_rows: int = 200

    @classmethod
    def load(cls, path: str | Path | None, **overrides: Any) -> ExportOptions:
        return load_config(cls, path, overrides, CHOICES, legacy=_legacy_fields)

    def to_toml(self) -> str:
        return to_toml(self)

    @property
    def quantization(self) -> Quantization:
        return Quantization(
            precision=self.quantize,
            weight_type=self.weight_type,
            per_channel=self.per_channel,
            reduce_range=self.reduce_range,
            decoder_weights=self.decoder_weights,
            embeddings=self.quantize_embeddings,
        )

    def to_json(self) -> dict:
        """The options as the manifest records them (enum values spelled as in a profile)."""
        return {k: v.value if isinstance(v, Enum) else v for k, v in dataclasses.asdict(self).items() if k != "name"}

    def _float32_cross_kv(self, encoder_pointer: bool) -> str | None:
        """Why this export cannot hand its cross keys/values over in float16 (None: it can)."""
        if encoder_pointer:
            return "encoder-pointer models"
        if self.quantize is not Precision.INT8:
            return f"quantize = {self.quantize.value}"
        if self.layout is not DecoderLayout.ENCODER_CROSS_KV:
            return f"layout = {self.layout.value}"
        return None

    def _one_grid(self, encoder_pointer: bool) -> str | None:
        """Why this export's steps cannot attend in row groups (None: they can)."""
        if encoder_pointer:
            return "encoder-pointer models"
        if self.layout is not DecoderLayout.ENCODER_CROSS_KV:
            return f"layout = {self.layout.value}"
        if not self.fuse or self.quantize is Precision.FP16:
            return "unfused graphs" if not self.fuse else "fp16 (unfused graphs)"
        return None

    def resolve(self, *, pointer_head: bool = False, encoder_pointer: bool = False) -> tuple[ExportOptions, list[str]]:
        """The options this checkpoint exports with, and a note for every change made to them.

        Raises:
            MtopEdgeError: options that contradict each other (every conflict in one message).
        """
        problems = []
        if self.fuse and self.layout is DecoderLayout.MERGED and not encoder_pointer:
            problems.append("fuse = true works on separate decoders: set layout = encoder-cross-kv or separate")
        if self.decoder_weights is not DecoderWeights.INT8 and self.quantize is not Precision.INT8:
            problems.append(
                f"decoder_weights = {self.decoder_weights.value} needs quantize = int8, not {self.quantize.value}"
            )
        if self.decoder_weights is DecoderWeights.PER_BATCH and self.layout is not DecoderLayout.ENCODER_CROSS_KV:
            problems.append("decoder_weights = per-batch needs layout = encoder-cross-kv (one step graph to twin)")
        if pointer_head and self.layout is DecoderLayout.MERGED:
            problems.append(
                "a pointer-head model exports as separate decoders: set layout = encoder-cross-kv or separate"
            )
        if self.cross_attention_groups < 1:
            problems.append(f"cross_attention_groups must be 1 or more, not {self.cross_attention_groups}")
        if problems:
            raise MtopEdgeError("export options conflict: " + "; ".join(problems))
        changes: dict[str, Any] = {}
        notes = []
        if encoder_pointer:
            if self.layout is not DecoderLayout.ENCODER_CROSS_KV:
                changes["layout"] = DecoderLayout.ENCODER_CROSS_KV
                notes.append("encoder-pointer: its encoder computes the cross keys/values (layout = encoder-cross-kv)")
            if self.trim_input:
                changes["trim_input"] = False
                notes.append("encoder-pointer: the WordPiece vocabulary is kept whole (trim_input = false)")
            if self.pack_encoder_tokens:
                changes["pack_encoder_tokens"] = False
                notes.append("encoder-pointer: its encoder keeps the padded grid (pack_encoder_tokens is for T5 kinds)")
        if self.cross_kv_dtype is CrossKvDtype.FLOAT16 and (why := self._float32_cross_kv(encoder_pointer)):
            changes["cross_kv_dtype"] = CrossKvDtype.FLOAT32
            notes.append(f"{why}: the cross keys/values stay float32 (cross_kv_dtype = float16 is for int8 T5 exports)")
        if self.cross_attention_groups > 1 and (why := self._one_grid(encoder_pointer)):
            changes["cross_attention_groups"] = 1
            notes.append(f"{why}: decoder steps attend over one padded grid (cross_attention_groups = 1)")
        if self.pack_encoder_tokens and not self.fuse and not encoder_pointer:
            changes["pack_encoder_tokens"] = False
            notes.append(
                "fuse = false: the encoder keeps the padded grid (pack_encoder_tokens works on the fused graph)"
            )
        if self.fuse and self.quantize is Precision.FP16:
            changes["fuse"] = False  # the fp16 converter keeps overflow-prone nodes in fp32 by their unfused names
            notes.append("fp16: graphs left unfused (fusion is for the CPU int8/fp32 graphs)")
            if self.pack_encoder_tokens:
                changes["pack_encoder_tokens"] = False
                notes.append("fp16: the encoder keeps the padded grid (pack_encoder_tokens works on the fused graph)")
        if pointer_head and self.quantize is Precision.INT8 and not self.per_channel:
            # the output layer's MatMul also carries the pointer projection, whose values one per-tensor
            # scale (set by the vocabulary rows) crushes (measured: benchmarks/README.md, "Pointer head")
            changes["per_channel"] = True
            notes.append("pointer head: int8 weights get per-channel scales")
        return dataclasses.replace(self, **changes), notes


def _legacy_fields(values: dict) -> dict:
    """Profiles written before ``layout`` existed said ``merged`` and ``encoder_cross_kv``."""
    merged = values.pop("merged", None)
    cross_kv = values.pop("encoder_cross_kv", None)
    if "layout" not in values and (merged is not None or cross_kv is not None):
        if merged:
            values["layout"] = DecoderLayout.MERGED.value
        else:
            values["layout"] = (DecoderLayout.SEPARATE if cross_kv is False else DecoderLayout.ENCODER_CROSS_KV).value
    return values
