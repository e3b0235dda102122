"""Training recipes: one flat dataclass, read from TOML, every field overridable from the CLI.

``training/README.md`` explains each field; the dataclass is the single source of truth for names,
types and defaults (the CLI builds an option per field from it). `Recipe.validate` checks the rules
between fields, all at once, before any file is read or written.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum
from pathlib import Path
from typing import Any

from mtop_edge.config import ConfigError, load_config, to_toml

SCRATCH = "scratch"
DEFAULT_ENCODER = "sentence-transformers/all-MiniLM-L6-v2"
CHOICES = {"select_by": ("eval_loss", "exact_match"), "device": ("auto", "cpu", "cuda")}


class ModelKind(str, Enum):
    """Which model a recipe trains."""

    T5 = "t5"  # a T5/mT5 encoder-decoder: from scratch, or fine-tuned from ``init``
    ENCODER_POINTER = "encoder-pointer"  # a pretrained BERT-family ``encoder`` with a small pointer decoder


class Pointing(str, Enum):
    """How a T5 model says which source word a slot holds."""

    TOKENS = "tokens"  # @ptrN vocabulary tokens; the source is the plain utterance (DAMP's recipe)
    MARKERS = "markers"  # @ptrN tokens, each source word preceded by its @ptrN marker
    MASKED = "masked"  # markers, and in training pointers past the row's words get no probability
    HEAD = "head"  # markers, and the decoder scores each word's marker state (content-based pointing)


HELP = {
    "name": "a name for the run, recorded with the model",
    "kind": "t5 (T5/mT5, scratch or fine-tuned) or encoder-pointer (pretrained BERT-family encoder + pointer decoder)",
    "init": 'hub id or local checkpoint to go on from, or "scratch" (t5: random weights; encoder-pointer: '
    "the pretrained encoder and a new decoder)",
    "encoder": "encoder-pointer: the pretrained BertModel, a local directory or hub id",
    "d_model": "hidden size (t5 from scratch; the decoder's with encoder-pointer)",
    "d_ff": "feed-forward size (t5 from scratch; the decoder's with encoder-pointer)",
    "num_layers": "encoder layers (t5 from scratch)",
    "num_decoder_layers": "decoder layers (t5 from scratch, encoder-pointer)",
    "num_heads": "attention heads (t5 from scratch; the decoder's with encoder-pointer)",
    "d_kv": "size of each attention head (t5 from scratch; the decoder's with encoder-pointer)",
    "feed_forward_proj": '"gated-gelu" (T5 v1.1/mT5) or "relu" (t5 from scratch)',
    "tie_word_embeddings": "share input embeddings and output layer (t5 from scratch)",
    "dropout_rate": "dropout in every layer (encoder-pointer: the decoder's; the encoder keeps its own)",
    "sp_vocab_size": "sentencepiece pieces trained on the utterances (t5 from scratch)",
    "pointing": "t5: tokens, markers, masked (absent words get no probability) or head (content-based); "
    "encoder-pointer always points by content (head)",
    "span_loss": "pointing head: weight of an auxiliary loss tagging each source word with its slot (0 = off)",
    "min_pointers": "pointer tokens to create at least (words the model can address)",
    "max_source_tokens": "longest encoder input accepted",
    "learning_rate": "peak learning rate (AdamW; encoder-pointer: the decoder's and heads')",
    "encoder_learning_rate": "encoder-pointer: the pretrained encoder's peak learning rate (0 = learning_rate)",
    "layer_decay": "encoder-pointer: each encoder layer learns this times the rate of the one above (1 = off)",
    "weight_decay": "AdamW weight decay (0 = plain Adam)",
    "per_device_batch_size": "rows per device per step",
    "group_by_length": "batch rows of similar length together (less padding, faster; batches less random)",
    "gradient_accumulation_steps": "steps accumulated per update (effective batch = this x batch x devices)",
    "max_steps": "optimizer updates; -1 = use epochs",
    "epochs": "passes over the training rows when max_steps = -1",
    "lr_scheduler": "learning-rate schedule (transformers name: linear, cosine, constant, ...)",
    "warmup_ratio": "share of updates spent warming up",
    "label_smoothing": "label smoothing factor",
    "seed": "random seed (data order, init, augmentation, holdout)",
    "augment_copies": "slot-value-swapped copies per training row (0 = off)",
    "word_dropout": "t5 with markers: share of source words whose pieces read as <unk> in each training batch",
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
    kind: ModelKind = ModelKind.T5
    # where the weights start: a hub id, a local checkpoint directory, or "scratch"
    init: str = SCRATCH
    encoder: str = DEFAULT_ENCODER
    # architecture (t5: used only when init = "scratch"; encoder-pointer: the decoder's)
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
    pointing: Pointing = Pointing.MARKERS
    span_loss: float = 0.0
    # input formatting
    min_pointers: int = 64
    max_source_tokens: int = 256
    # optimisation
    learning_rate: float = 1e-3
    encoder_learning_rate: float = 0.0
    layer_decay: float = 1.0
    weight_decay: float = 0.0
    per_device_batch_size: int = 64
    group_by_length: bool = True
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
        """Read a TOML recipe (or start from defaults), apply overrides (None = keep), validate.

        Raises:
            ConfigError: unreadable TOML, unknown fields, values of the wrong type, or fields that
            contradict each other (every conflict in one message).
        """
        recipe = load_config(cls, path, overrides, CHOICES, legacy=_legacy_fields)
        recipe.validate()
        return recipe

    @property
    def markers(self) -> bool:
        """The source puts each word's pointer token before it (every T5 pointing but plain tokens)."""
        return self.kind is ModelKind.T5 and self.pointing is not Pointing.TOKENS

    def validate(self) -> None:
        """Raises ConfigError listing every rule between fields that this recipe breaks."""
        problems = []
        if self.kind is ModelKind.ENCODER_POINTER:
            if self.pointing is not Pointing.HEAD:
                problems.append('kind = "encoder-pointer" points by content: pointing = "head"')
            if self.word_dropout > 0:
                problems.append("word_dropout finds words between markers: t5 recipes only")
            if self.num_heads * self.d_kv <= 0:
                problems.append("the decoder needs num_heads and d_kv above 0")
        else:
            if self.span_loss > 0 and self.pointing is not Pointing.HEAD:
                problems.append('span_loss tags the pointer head\'s word states: it needs pointing = "head"')
            if self.word_dropout > 0 and not self.markers:
                problems.append("word_dropout needs markers (pointing = markers, masked or head)")
        if not 0 < self.layer_decay <= 1:
            problems.append(f"layer_decay must be in (0, 1], got {self.layer_decay}")
        if problems:
            raise ConfigError("recipe conflicts: " + "; ".join(problems))

    def to_toml(self) -> str:
        """The resolved recipe as TOML, saved beside the trained model."""
        return to_toml(self)


def _legacy_fields(values: dict) -> dict:
    """Recipes written before ``pointing`` existed: ``pointer_head``, ``markers`` and
    ``mask_absent_pointers`` were three booleans for the one choice."""
    old = {key: values.pop(key) for key in ("pointer_head", "markers", "mask_absent_pointers") if key in values}
    if old and "pointing" not in values:
        if old.get("pointer_head"):
            values["pointing"] = Pointing.HEAD.value
        elif old.get("mask_absent_pointers"):
            values["pointing"] = Pointing.MASKED.value
        else:
            values["pointing"] = (Pointing.MARKERS if old.get("markers", True) else Pointing.TOKENS).value
    return values
