"""Training recipes: one flat dataclass, read from TOML, every field overridable from the CLI.

``training/README.md`` explains each field; the dataclass is the single source of truth for names,
types and defaults (the CLI builds an option per field from it).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mtop_edge.config import load_config, to_toml

SCRATCH = "scratch"
CHOICES = {"select_by": ("eval_loss", "exact_match"), "device": ("auto", "cpu", "cuda")}


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
    "pointer_head": "point by content: score each source word's marker state (scratch, markers only)",
    "span_loss": "pointer head: weight of an auxiliary loss tagging each source word with its slot (0 = off)",
    "mask_absent_pointers": "@ptrN model: in training, pointers past the row's words get no probability (markers only)",
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
    "word_dropout": "share of source words whose pieces read as <unk> in each training batch (markers kept)",
    "max_minutes": "stop training after this many minutes, then evaluate and keep the best (0 = no limit)",
    "eval_holdout": "rows held out of --data for eval when --eval-data is not given",
    "eval_limit": "evaluate during training on the first N eval rows (0 = all)",
    "eval_steps": "evaluate and checkpoint every N updates",
    "select_by": "keep the best checkpoint by eval_loss or exact_match",
    "save_total_limit": "checkpoints kept on disk (the best is always kept)",
    "average_last": "final model = mean weights of the last N checkpoints (every eval_steps), not the best (0 = off)",
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
    pointer_head: bool = False
    span_loss: float = 0.0
    mask_absent_pointers: bool = False
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
    word_dropout: float = 0.0
    max_minutes: float = 0.0
    # evaluation, checkpoints, logging
    eval_holdout: int = 300
    eval_limit: int = 0
    eval_steps: int = 500
    select_by: str = "eval_loss"
    save_total_limit: int = 2
    average_last: int = 0
    logging_steps: int = 50
    device: str = "auto"

    @classmethod
    def load(cls, path: str | Path | None, **overrides: Any) -> Recipe:
        """Read a TOML recipe (or start from defaults) and apply overrides (None = keep).

        Raises:
            ConfigError: unreadable TOML, unknown fields, or values of the wrong type.
        """
        return load_config(cls, path, overrides, CHOICES)

    def to_toml(self) -> str:
        """The resolved recipe as TOML, saved beside the trained model."""
        return to_toml(self)
