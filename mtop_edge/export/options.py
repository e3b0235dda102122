"""Export options: one flat dataclass, read from a profile (export/*.toml), overridable from the CLI."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mtop_edge.config import load_config, to_toml

CHOICES = {
    "quantize": ("int8", "none", "fp16"),
    "weight_type": ("uint8", "int8"),
    "decoder_weights": ("int8", "int4"),
    "optimize": ("none", "basic", "extended"),
}
HELP = {
    "name": "profile name, recorded in the manifest",
    "quantize": "int8 (dynamic, weight MatMuls), none (fp32) or fp16 (CUDA)",
    "trim": "keep only the target vocabulary in the decoder's embedding and output layer",
    "trim_input": "keep only source pieces seen in training in the encoder embedding (unseen -> <unk>)",
    "merged": "one decoder graph with an If on use_cache_branch instead of two",
    "weight_type": "int8 weights: int8 (signed; with reduce_range on AVX2-only CPUs too) or uint8",
    "per_channel": "per-channel weight scales for int8",
    "decoder_weights": "int4: the decoder's weight MatMuls as 4-bit MatMulNBits (blocks of 128, int8 compute)",
    "reduce_range": "7-bit weights: signed int8 weights cannot saturate on AVX2-only CPUs",
    "quantize_embeddings": "also quantize embedding Gathers (smaller files; off: weight MatMuls only)",
    "optimize": "offline onnxruntime graph optimization saved into the files",
    "fuse": "fused attention, norm and GELU nodes (onnxruntime's T5 fusion, made to run on the CPU)",
    "encoder_cross_kv": "the encoder also returns the cross-attention keys/values: one decoder graph for every step",
    "share_weights": "store each weight once in weights.bin (the two decoders share theirs)",
    "opset": "ONNX opset (0 = optimum's default for T5)",
    "parity_rows": "utterances for the parity check at the end (0 = skip)",
}


@dataclass(frozen=True)
class ExportOptions:
    name: str = "custom"
    quantize: str = "int8"
    trim: bool = True
    trim_input: bool = False
    merged: bool = False
    weight_type: str = "int8"
    per_channel: bool = True
    reduce_range: bool = True
    decoder_weights: str = "int8"
    quantize_embeddings: bool = True
    optimize: str = "none"
    fuse: bool = True
    encoder_cross_kv: bool = True
    share_weights: bool = True
    opset: int = 0
    parity_rows: int = 200

    @classmethod
    def load(cls, path: str | Path | None, **overrides: Any) -> ExportOptions:
        return load_config(cls, path, overrides, CHOICES)

    def to_toml(self) -> str:
        return to_toml(self)
