"""Training recipes: one flat dataclass, read from TOML, every field overridable from the CLI.

``training/README.md`` explains each field; the dataclass is the single source of truth for names,
types and defaults (the CLI builds an option per field from it).
"""

from __future__ import annotations

import dataclasses
import sys
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

from mtop_edge.errors import MtopEdgeError

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - exercised on Python 3.10 only
    import tomli as tomllib

SCRATCH = "scratch"


class RecipeError(MtopEdgeError):
    """A recipe file or override that does not fit the Recipe fields."""

    exit_code = 2


HELP = {
    "name": "a name for the run, recorded with the model",
    "init": 'hub id or local checkpoint to fine-tune, or "scratch"',
    "d_model": "hidden size (scratch only)",
    "d_ff": "feed-forward size (scratch only)",
    "num_layers": "encoder layers (scratch only)",
    "num_decoder_layers": "decoder layers (scratch only)",
    "num_heads": "attention heads (scratch only)",
    "d_kv": "size of each attention head (scratch only)",
    "feed_forward_proj": '"gated-gelu" (T5 v1.1/mT5) or "relu" (scratch only)',
    "tie_word_embeddings": "share input embeddings and output layer (scratch only)",
    "dropout_rate": "dropout in every layer",
    "sp_vocab_size": "sentencepiece pieces trained on the utterances (scratch only)",
    "markers": "write each word's pointer before it in the input (@ptr0 set @ptr1 an ...)",
    "min_pointers": "pointer tokens to create at least (words the model can address)",
    "max_source_tokens": "longest encoder input accepted",
    "learning_rate": "peak learning rate (Adam)",
    "weight_decay": "AdamW weight decay (0 = plain Adam)",
    "per_device_batch_size": "rows per device per step",
    "gradient_accumulation_steps": "steps accumulated per update (effective batch = this x batch x devices)",
    "max_steps": "optimizer updates; -1 = use epochs",
    "epochs": "passes over the training rows when max_steps = -1",
    "lr_scheduler": "learning-rate schedule (transformers name: linear, cosine, constant, ...)",
    "warmup_ratio": "share of updates spent warming up",
    "label_smoothing": "label smoothing factor",
    "seed": "random seed (data order, init, augmentation, holdout)",
    "augment_copies": "slot-value-swapped copies per training row (0 = off)",
    "eval_holdout": "rows held out of --data for eval when --eval-data is not given",
    "eval_limit": "evaluate during training on the first N eval rows (0 = all)",
    "eval_steps": "evaluate and checkpoint every N updates",
    "select_by": "keep the best checkpoint by eval_loss or exact_match",
    "save_total_limit": "checkpoints kept on disk (the best is always kept)",
    "logging_steps": "log a line every N updates",
    "device": "auto, cpu or cuda",
}


@dataclass(frozen=True)
class Recipe:
    """Everything a training run depends on, besides the data."""

    name: str = "custom"
    # where the weights start: a hub id, a local checkpoint directory, or "scratch"
    init: str = SCRATCH
    # architecture (used only when init = "scratch")
    d_model: int = 256
    d_ff: int = 1024
    num_layers: int = 4
    num_decoder_layers: int = 4
    num_heads: int = 4
    d_kv: int = 64
    feed_forward_proj: str = "gated-gelu"
    tie_word_embeddings: bool = False
    dropout_rate: float = 0.1
    sp_vocab_size: int = 4000
    # input formatting
    markers: bool = True
    min_pointers: int = 64
    max_source_tokens: int = 256
    # optimisation
    learning_rate: float = 1e-3
    weight_decay: float = 0.0
    per_device_batch_size: int = 64
    gradient_accumulation_steps: int = 1
    max_steps: int = -1
    epochs: float = 10.0
    lr_scheduler: str = "linear"
    warmup_ratio: float = 0.0
    label_smoothing: float = 0.0
    seed: int = 42
    augment_copies: int = 0
    # evaluation, checkpoints, logging
    eval_holdout: int = 300
    eval_limit: int = 0
    eval_steps: int = 500
    select_by: str = "eval_loss"
    save_total_limit: int = 2
    logging_steps: int = 50
    device: str = "auto"

    @classmethod
    def field_names(cls) -> list[str]:
        return [f.name for f in fields(cls)]

    @classmethod
    def load(cls, path: str | Path | None, **overrides: Any) -> Recipe:
        """Read a TOML recipe (or start from defaults) and apply overrides (None = keep).

        Raises:
            RecipeError: unreadable TOML, unknown fields, or values of the wrong type.
        """
        values: dict[str, Any] = {}
        if path is not None:
            try:
                values = tomllib.loads(Path(path).read_text())
            except OSError as exc:
                raise RecipeError(f"{path}: cannot read recipe ({exc.strerror or exc})") from None
            except tomllib.TOMLDecodeError as exc:
                raise RecipeError(f"{path}: invalid TOML ({exc})") from None
        values.update({k: v for k, v in overrides.items() if v is not None})
        unknown = sorted(set(values) - set(cls.field_names()))
        if unknown:
            raise RecipeError(f"unknown recipe field(s): {', '.join(unknown)}; valid: {', '.join(cls.field_names())}")
        problems = []
        for f in fields(cls):
            if f.name in values:
                value = values[f.name]
                if f.type == "float" and isinstance(value, int) and not isinstance(value, bool):
                    values[f.name] = value = float(value)
                expected = {"int": int, "float": float, "str": str, "bool": bool}[str(f.type)]
                if not isinstance(value, expected) or (expected is int and isinstance(value, bool)):
                    problems.append(f"{f.name} must be {f.type}, got {value!r}")
        choices = {"select_by": ("eval_loss", "exact_match"), "device": ("auto", "cpu", "cuda")}
        for name, allowed in choices.items():
            if name in values and values[name] not in allowed:
                problems.append(f"{name} must be one of {', '.join(allowed)}, got {values[name]!r}")
        if problems:
            raise RecipeError("bad recipe: " + "; ".join(problems))
        return cls(**values)

    def to_toml(self) -> str:
        """The resolved recipe as TOML, saved beside the trained model."""
        lines = []
        for key, value in dataclasses.asdict(self).items():
            if isinstance(value, bool):
                text = "true" if value else "false"
            elif isinstance(value, str):
                text = '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'
            else:
                text = repr(value)
            lines.append(f"{key} = {text}")
        return "\n".join(lines) + "\n"
