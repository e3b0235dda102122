"""Scores of predicted trees against gold: exact match (the headline), intent accuracy, slot F1."""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import asdict, dataclass

from mtop_edge.core.forms import Intent, same_parse, slot_value_key
from mtop_edge.core.source import Source
from mtop_edge.core.spec import PointerSpec


@dataclass(frozen=True)
class Rejected:
    """A row whose input the engine refused (empty, too long): a miss, but no output to judge."""

    reason: str


@dataclass(frozen=True)
class Scores:
    """``well_formed`` is the share of produced outputs that are trees: rejected inputs
    (``input_errors``) produced none and are left out of it; every score counts them as misses."""

    n: int
    exact_match: float
    intent_accuracy: float
    slot_precision: float
    slot_recall: float
    slot_f1: float
    well_formed: float
    input_errors: int = 0

    def to_dict(self) -> dict[str, float | int]:
        return asdict(self)


def slot_items(tree: Intent) -> Counter:
    """The tree's slots as a multiset of (label, value); value is the text without whitespace,
    or the nested intent's canonical form. This is "label + span": a span is its text."""
    items: Counter = Counter()
    for slot in tree.walk_slots():
        items[(slot.label, slot_value_key(slot))] += 1
    return items


def score(golds: Sequence[Intent], predictions: Sequence[Intent | Rejected | None]) -> Scores:
    """Score predictions (None = malformed output, Rejected = no output) against gold trees, row by row."""
    if len(golds) != len(predictions):
        raise ValueError(f"{len(golds)} gold trees but {len(predictions)} predictions")
    n = len(golds)
    exact = intent = well_formed = rejected = 0
    true_pos = pred_total = gold_total = 0
    for gold, pred in zip(golds, predictions, strict=True):
        gold_slots = slot_items(gold)
        gold_total += sum(gold_slots.values())
        if isinstance(pred, Rejected):
            rejected += 1
            continue
        if pred is None:
            continue
        well_formed += 1
        exact += same_parse(gold, pred)
        intent += gold.label == pred.label
        pred_slots = slot_items(pred)
        pred_total += sum(pred_slots.values())
        true_pos += sum((gold_slots & pred_slots).values())
    precision = true_pos / pred_total if pred_total else 0.0
    recall = true_pos / gold_total if gold_total else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return Scores(
        n=n,
        exact_match=exact / n if n else 0.0,
        intent_accuracy=intent / n if n else 0.0,
        slot_precision=precision,
        slot_recall=recall,
        slot_f1=f1,
        well_formed=well_formed / (n - rejected) if n > rejected else 0.0,
        input_errors=rejected,
    )


def id_exact_matches(
    spec: PointerSpec, outputs: Sequence[Sequence[int]], gold: Sequence[Intent], sources: Sequence[Source]
) -> tuple[int, int]:
    """(exact matches, well-formed outputs) of decoded target ids against gold trees.

    ``outputs[i]`` holds the checkpoint's ids for ``sources[i]``, decoder start excluded (EOS and
    what follows it are ignored); a sequence that is not a tree is a miss.
    """
    hits = well_formed = 0
    for ids, tree, source in zip(outputs, gold, sources, strict=True):
        predicted = spec.try_decode(ids, source.utterance, source.words)
        well_formed += predicted is not None
        hits += same_parse(predicted, tree)
    return hits, well_formed
