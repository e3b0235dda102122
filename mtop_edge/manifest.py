"""The exported model directory: fixed file names plus ``manifest.json``, the runtime's contract.

Written by `mtop-edge export`, read by the runtime. Graph names follow optimum's scheme so that
optimum can load our exports as a cross-check.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from mtop_edge.core.spec import PointerSpec
from mtop_edge.errors import ModelError

MANIFEST_FILE = "manifest.json"
DEFAULT_MODEL_DIR = Path(__file__).resolve().parent / "models" / "default"  # the embedded model (package data)
MANIFEST_VERSION = 1
ENCODER = "encoder_model.onnx"
DECODER = "decoder_model.onnx"
DECODER_WITH_PAST = "decoder_with_past_model.onnx"
DECODER_MERGED = "decoder_model_merged.onnx"
WEIGHTS_FILE = "weights.bin"  # written by export/shared_weights.py when weights are stored once
# a pointer-head model's encoder outputs these and both decoders take them (export/pointer_head.py)
POINTER_MEMORY = "pointer_memory"
POINTER_BIAS = "pointer_bias"


def record_evaluation(directory: str | Path, name: str, figures: dict) -> None:
    """Store evaluation figures in a model directory's manifest under ``evaluation[name]`` (atomic replace)."""
    path = Path(directory) / MANIFEST_FILE
    raw = Manifest.load(directory).raw
    raw.setdefault("evaluation", {})[name] = figures
    scratch = path.with_suffix(".json.tmp")
    scratch.write_text(json.dumps(raw, indent=1) + "\n")
    scratch.replace(path)


def model_id(raw: dict) -> str:
    """``name@hash`` from a raw manifest: what a user quotes to say which model answered."""
    source = raw.get("source") or {}
    name = raw.get("name") or Path(str(source.get("checkpoint", "unnamed"))).name
    return f"{name}@{str(source.get('sha256', ''))[:12] or 'unknown'}"


@dataclass(frozen=True)
class Architecture:
    """The facts every consumer of the graphs needs; caches are sized from ``d_kv``, not d_model / heads."""

    d_model: int
    num_layers: int
    num_decoder_layers: int
    num_heads: int
    d_kv: int
    encoder_vocab: int
    decoder_vocab: int

    def past_names(self, prefix: str, part: str) -> list[str]:
        """``{prefix}.{i}.{part}.key`` / ``.value`` for every decoder layer, in graph order.

        prefix: ``past_key_values`` (inputs) or ``present`` (outputs); part: ``decoder`` (self
        attention) or ``encoder`` (cross attention).
        """
        return [f"{prefix}.{i}.{part}.{kind}" for i in range(self.num_decoder_layers) for kind in ("key", "value")]


@dataclass(frozen=True)
class Manifest:
    """What the runtime reads. ``decoder_ids[t]`` is the checkpoint id of exported decoder id t
    (None: the decoder vocabulary was not trimmed); ``encoder_ids`` likewise for the encoder."""

    directory: Path
    spec: PointerSpec
    architecture: Architecture
    decoder_ids: tuple[int, ...] | None
    encoder_ids: tuple[int, ...] | None
    quantization: str
    merged: bool
    raw: dict

    @property
    def model_id(self) -> str:
        """``name@hash``: the model's name and the first 12 hex digits of its checkpoint's sha256."""
        return model_id(self.raw)

    @property
    def pointer_inputs(self) -> list[str]:
        """Encoder outputs the decoders also take: the pointer memory of a pointer-head model, else none."""
        return [POINTER_MEMORY, POINTER_BIAS] if self.raw.get("pointer_head") else []

    @property
    def encoder_cross_kv(self) -> bool:
        """The encoder returns the cross-attention keys/values; the with-past decoder runs every step."""
        return bool(self.raw.get("encoder_cross_kv"))

    @property
    def files(self) -> list[str]:
        if self.merged:
            graphs = [ENCODER, DECODER_MERGED]
        else:
            graphs = [ENCODER, DECODER_WITH_PAST] if self.encoder_cross_kv else [ENCODER, DECODER, DECODER_WITH_PAST]
        shared = [WEIGHTS_FILE] if self.raw.get("shared_weights") else []
        return [*graphs, *shared, self.spec.tokenizer]

    @classmethod
    def load(cls, directory: str | Path) -> Manifest:
        """Read and check ``manifest.json`` and that every file it needs is present.

        Raises:
            ModelError: naming the missing or corrupt file.
        """
        directory = Path(directory)
        path = directory / MANIFEST_FILE
        if not directory.is_dir():
            raise ModelError(f"{directory}: model directory not found")
        try:
            raw = json.loads(path.read_text())
        except FileNotFoundError:
            raise ModelError(f"{path}: missing (is this a directory written by `mtop-edge export`?)") from None
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise ModelError(f"{path}: corrupt manifest ({exc})") from None
        if not isinstance(raw, dict):
            raise ModelError(f"{path}: corrupt manifest (a JSON object expected, found {type(raw).__name__})")
        try:
            if raw.get("format_version") != MANIFEST_VERSION:
                raise ModelError(
                    f"{path}: manifest format {raw.get('format_version')!r} is not supported "
                    f"(expected {MANIFEST_VERSION}; re-export with this version of mtop-edge)"
                )
            manifest = cls(
                directory=directory,
                spec=PointerSpec.from_json(raw["pointer"]),
                architecture=Architecture(**raw["architecture"]),
                decoder_ids=None if raw.get("decoder_ids") is None else tuple(raw["decoder_ids"]),
                encoder_ids=None if raw.get("encoder_ids") is None else tuple(raw["encoder_ids"]),
                quantization=raw["quantization"],
                merged=bool(raw["merged"]),
                raw=raw,
            )
        except ModelError:
            raise
        except (KeyError, TypeError, ValueError) as exc:
            raise ModelError(f"{path}: corrupt manifest ({type(exc).__name__}: {exc})") from None
        manifest._check_ids(path)
        for name in manifest.files:
            if not (directory / name).is_file():
                raise ModelError(f"{directory / name}: missing model file")
        return manifest

    def _check_ids(self, path: Path) -> None:
        """The id maps fit the architecture and hold the ids decoding needs (else ModelError, naming the field)."""
        arch, spec = self.architecture, self.spec
        for field_name, ids, size in (
            ("decoder_ids", self.decoder_ids, arch.decoder_vocab),
            ("encoder_ids", self.encoder_ids, arch.encoder_vocab),
        ):
            if ids is None:
                continue
            if not all(isinstance(i, int) and not isinstance(i, bool) and i >= 0 for i in ids):
                raise ModelError(f"{path}: {field_name} must be a list of non-negative integers")
            if len(ids) != size:
                raise ModelError(f"{path}: {field_name} has {len(ids)} ids but the architecture says {size}")
        if self.decoder_ids is None and max(spec.decoder_vocabulary()) >= arch.decoder_vocab:
            raise ModelError(
                f"{path}: no decoder_ids, yet decoder_vocab {arch.decoder_vocab} is smaller than the target ids "
                f"(up to {max(spec.decoder_vocabulary())}): a trimmed export's decoder_ids are missing"
            )
        if self.decoder_ids is not None:
            missing = sorted(set(spec.decoder_vocabulary()) - set(self.decoder_ids))
            if missing:
                raise ModelError(f"{path}: decoder_ids lacks ids the decoder must produce ({missing[:5]})")
