"""How an exported model's decoder graphs are laid out, and how their inputs are fed: one place.

Every layout is two decoder calls described as data: the graph of the first step and the graph of
every later step, each with the boolean switches it takes. Graph inputs are fed by name from what
the encoder and earlier calls returned (`feeding_output`), so the runtime's loop reads the same
for every layout and every model kind; a new kind adds graphs with these names, not a new loop.
File names follow optimum's scheme so that optimum can load our exports as a cross-check.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum

ENCODER = "encoder_model.onnx"
DECODER = "decoder_model.onnx"
DECODER_WITH_PAST = "decoder_with_past_model.onnx"
DECODER_MERGED = "decoder_model_merged.onnx"
SMALL_BATCH_STEP = "decoder_with_past_model_int4.onnx"  # decoder_weights = per-batch: the step for a few rows
UNGROUPED_STEP = "decoder_with_past_model_one_grid.onnx"  # cross_attention_groups > 1: the step for a few rows

INPUT_IDS = "input_ids"
ATTENTION_MASK = "attention_mask"
ENCODER_ATTENTION_MASK = "encoder_attention_mask"
LOGITS = "logits"
PAST, PRESENT = "past_key_values", "present"
SELF, CROSS = "decoder", "encoder"
USE_CACHE = "use_cache_branch"
GROUP = ".group"  # export option cross_attention_groups: input ``name`` of row group k is ``name.group{k}``


class DecoderLayout(str, Enum):
    """Which decoder graphs an export has."""

    SEPARATE = "separate"  # decoder_model (first step; also returns the cross keys/values) + decoder_with_past_model
    MERGED = "merged"  # decoder_model_merged: both behind an If on use_cache_branch
    ENCODER_CROSS_KV = "encoder-cross-kv"  # the encoder returns the cross keys/values; decoder_with_past every step


@dataclass(frozen=True)
class DecoderCall:
    """One decoder graph as a step runs it, with its fixed boolean inputs."""

    file: str
    switches: tuple[tuple[str, bool], ...] = ()


@dataclass(frozen=True)
class GraphPlan:
    """The decoder calls. ``twins`` (max rows, step), narrowest first, are twins of the step graph
    for calls of a few rows, where they are faster: with 4-bit weights (a step's weight read
    dominates at a row or two), or without row groups (their nodes cost more than a few rows save).
    The first twin whose max rows a call fits replaces the step, and the first call where that is
    the step graph too."""

    first: DecoderCall
    step: DecoderCall
    twins: tuple[tuple[int, DecoderCall], ...] = ()

    @property
    def files(self) -> list[str]:
        return list(dict.fromkeys([ENCODER, self.first.file, self.step.file, *(twin.file for _, twin in self.twins)]))

    def calls(self, rows: int) -> tuple[DecoderCall, DecoderCall]:
        """The first and later decoder calls for a batch of ``rows`` rows."""
        for max_rows, twin in self.twins:
            if rows <= max_rows:
                return (twin if self.first == self.step else self.first), twin
        return self.first, self.step


PLANS = {
    DecoderLayout.SEPARATE: GraphPlan(DecoderCall(DECODER), DecoderCall(DECODER_WITH_PAST)),
    DecoderLayout.MERGED: GraphPlan(
        DecoderCall(DECODER_MERGED, ((USE_CACHE, False),)), DecoderCall(DECODER_MERGED, ((USE_CACHE, True),))
    ),
    DecoderLayout.ENCODER_CROSS_KV: GraphPlan(DecoderCall(DECODER_WITH_PAST), DecoderCall(DECODER_WITH_PAST)),
}


def past_names(prefix: str, part: str, layers: int) -> list[str]:
    """``{prefix}.{i}.{part}.key`` / ``.value`` for every decoder layer, in graph order.

    prefix: `PAST` (inputs) or `PRESENT` (outputs); part: `SELF` or `CROSS` attention.
    """
    return [f"{prefix}.{i}.{part}.{kind}" for i in range(layers) for kind in ("key", "value")]


def feeding_output(name: str) -> str:
    """The output (of the encoder or an earlier decoder call) that feeds decoder input ``name``:
    a past from the present of the same name, the encoder states from the encoder's last hidden
    state, anything else (the pointer inputs, say) from the output of its own name."""
    if name.startswith(PAST + "."):
        return PRESENT + name[len(PAST) :]
    if name == "encoder_hidden_states":
        return "last_hidden_state"
    return name


def group_name(name: str, k: int) -> str:
    """Row group ``k``'s copy of a grouped step input (cross keys/values, encoder mask)."""
    return f"{name}{GROUP}{k}"


def grouped_input(name: str) -> tuple[str, int] | None:
    """(the input it groups, its group) for a row group's input, else None."""
    base, sep, k = name.rpartition(GROUP)
    return (base, int(k)) if sep and k.isdigit() else None


def layout_of(raw: dict) -> DecoderLayout:
    """The layout a manifest records; manifests written before ``decoder_layout`` said ``merged``
    and ``encoder_cross_kv`` (two booleans for the one choice)."""
    if "decoder_layout" in raw:
        return DecoderLayout(raw["decoder_layout"])
    if raw.get("merged"):
        return DecoderLayout.MERGED
    return DecoderLayout.ENCODER_CROSS_KV if raw.get("encoder_cross_kv") else DecoderLayout.SEPARATE
