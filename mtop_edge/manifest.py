"""The exported model directory: fixed file names plus ``manifest.json``, the runtime's contract.

Written by `mtop-edge export`, read by the runtime. Which graphs it holds and how they are fed is
``layout.py``'s to say; the manifest records the layout.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from pathlib import Path

from mtop_edge.core.source import WORD_INDEX
from mtop_edge.core.spec import PointerSpec, SourceFormat
from mtop_edge.errors import ModelError
from mtop_edge.layout import (
    ATTENTION_MASK,
    INPUT_IDS,
    PLANS,
    DecoderCall,
    DecoderLayout,
    GraphPlan,
    layout_of,
    past_names,
)

MANIFEST_FILE = "manifest.json"
MODELS_DIR = Path(__file__).resolve().parent / "models"  # the embedded models, one directory each (package data)
DEFAULT_MODEL = "minilm-pointer"  # what `mtop-edge parse` uses without --model
DEFAULT_MODEL_DIR = MODELS_DIR / DEFAULT_MODEL
MANIFEST_VERSION = 1
WEIGHTS_FILE = "weights.bin"  # written by export/shared_weights.py when weights are stored once


def write_manifest(directory: str | Path, raw: dict) -> Manifest:
    """Write ``manifest.json`` (atomic replace) and read it back as the runtime will: what is written
    must load.

    Raises:
        ModelError: the manifest does not describe a loadable model directory (names what is wrong).
    """
    path = Path(directory) / MANIFEST_FILE
    scratch = path.with_suffix(".json.tmp")
    scratch.write_text(json.dumps(raw, indent=1) + "\n")
    scratch.replace(path)
    return Manifest.load(directory)


def record_evaluation(directory: str | Path, name: str, figures: dict) -> None:
    """Store evaluation figures in a model directory's manifest under ``evaluation[name]``."""
    raw = Manifest.load(directory).raw
    raw.setdefault("evaluation", {})[name] = figures
    write_manifest(directory, raw)


def embedded_models() -> list[str]:
    """The names of the models this installation embeds (each ``models/NAME/``), the default first."""
    names = sorted(p.parent.name for p in MODELS_DIR.glob(f"*/{MANIFEST_FILE}"))
    return sorted(names, key=lambda name: name != DEFAULT_MODEL)


def resolve_model_dir(model: str | Path | None) -> Path:
    """A model directory from what a user names: a directory, the name of an embedded model, or
    None for the default.

    Raises:
        ModelError: neither a directory nor an embedded model's name (the valid names are listed).
    """
    if model is None:
        if not (DEFAULT_MODEL_DIR / MANIFEST_FILE).is_file():
            raise ModelError(
                f"no default model is embedded in this installation ({DEFAULT_MODEL_DIR} is empty); "
                "pass --model DIR with a directory written by `mtop-edge export`"
            )
        return DEFAULT_MODEL_DIR
    path = Path(model)
    if path.is_dir() or str(model) not in embedded_models():
        return path  # Manifest.load names what is wrong with a path, and lists the embedded names
    return MODELS_DIR / str(model)


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
        return past_names(prefix, part, self.num_decoder_layers)


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
    layout: DecoderLayout
    raw: dict

    @property
    def model_id(self) -> str:
        """``name@hash``: the model's name and the first 12 hex digits of its checkpoint's sha256."""
        return model_id(self.raw)

    @property
    def plan(self) -> GraphPlan:
        """The decoder calls of this export's layout (and its small-batch steps, if it has any)."""
        plan = PLANS[self.layout]
        # small_batch_step: one twin, as manifests said before there could be two
        twins = self.raw.get(
            "small_batch_steps", [self.raw["small_batch_step"]] if "small_batch_step" in self.raw else []
        )
        if not twins:
            return plan
        steps = sorted(((int(twin["max_rows"]), DecoderCall(twin["file"])) for twin in twins), key=lambda t: t[0])
        return dataclasses.replace(plan, twins=tuple(steps))

    @property
    def packed_encoder(self) -> bool:
        """The encoder skips a batch's padding itself (export option ``pack_encoder_tokens``)."""
        return bool(self.raw.get("options", {}).get("pack_encoder_tokens", False))

    @property
    def row_groups(self) -> int:
        """How many row groups the step's cross-attention runs in (export option ``cross_attention_groups``)."""
        return int(self.raw.get("cross_attention_groups", 1))

    @property
    def encoder_inputs(self) -> list[str]:
        """What the encoder graph takes (`core.source.encoder_feed` builds them)."""
        extra = [WORD_INDEX] if self.spec.source_format is SourceFormat.WORD_PIECES else []
        return [INPUT_IDS, ATTENTION_MASK, *extra]

    @property
    def files(self) -> list[str]:
        shared = [WEIGHTS_FILE] if self.raw.get("shared_weights") else []
        return [*self.plan.files, *shared, self.spec.tokenizer]

    @classmethod
    def load(cls, directory: str | Path) -> Manifest:
        """Read and check ``manifest.json`` and that every file it needs is present.

        Raises:
            ModelError: naming the missing or corrupt file.
        """
        directory = Path(directory)
        path = directory / MANIFEST_FILE
        if not directory.is_dir():
            names = ", ".join(embedded_models()) or "none"
            raise ModelError(f"{directory}: model directory not found (embedded models: {names})")
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
                layout=layout_of(raw),
                raw=raw,
            )
            manifest.plan  # noqa: B018 -- malformed small_batch_steps fail here, as a corrupt manifest
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
