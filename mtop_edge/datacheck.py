"""`mtop-edge data check`: how much of a data file the pointer format can represent."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

from mtop_edge.core.forms import same_parse
from mtop_edge.core.pointer import from_pointer_tokens, pointer_index, split_words, to_pointer_tokens
from mtop_edge.data import Dataset, Example
from mtop_edge.errors import MtopEdgeError


def pointer_round_trip(example: Example) -> tuple[list[str] | None, str | None]:
    """(pointer tokens, None) if the gold tree survives tree -> pointers -> tree, else (None, why)."""
    words = split_words(example.utterance)
    try:
        tokens = to_pointer_tokens(example.tree, words)
        back = from_pointer_tokens(tokens, example.utterance, words)
    except MtopEdgeError as exc:
        return None, str(exc)
    if not same_parse(back, example.tree):
        return None, "the tree read back from pointers differs from the gold tree"
    return tokens, None


@dataclass
class CheckReport:
    path: str
    format: str
    rows: int
    malformed: int
    aligned: int
    intents: Counter = field(default_factory=Counter)
    slots: Counter = field(default_factory=Counter)
    max_pointer_index: int = -1
    max_words: int = 0
    first_malformed: list[dict] = field(default_factory=list)
    first_unaligned: list[dict] = field(default_factory=list)

    @property
    def coverage(self) -> float:
        """Aligned rows over well-formed rows."""
        parsed = self.rows - self.malformed
        return self.aligned / parsed if parsed else 0.0

    def to_json(self) -> dict:
        return {
            "path": self.path,
            "format": self.format,
            "rows": self.rows,
            "malformed": self.malformed,
            "aligned": self.aligned,
            "coverage": round(self.coverage, 6),
            "intents": dict(self.intents.most_common()),
            "slots": dict(self.slots.most_common()),
            "max_pointer_index": self.max_pointer_index,
            "max_words": self.max_words,
            "first_malformed": self.first_malformed,
            "first_unaligned": self.first_unaligned,
        }


def check(dataset: Dataset, *, show: int = 10) -> CheckReport:
    """Count rows, malformed rows and aligned rows; collect the label inventory."""
    report = CheckReport(dataset.path, dataset.format, dataset.rows, len(dataset.errors), 0)
    report.first_malformed = [{"line": e.line, "error": e.reason} for e in dataset.errors[:show]]
    for example in dataset.examples:
        report.max_words = max(report.max_words, len(split_words(example.utterance)))
        for intent in example.tree.walk_intents():
            report.intents[intent.label] += 1
        for slot in example.tree.walk_slots():
            report.slots[slot.label] += 1
        tokens, reason = pointer_round_trip(example)
        if tokens is None:
            if len(report.first_unaligned) < show:
                report.first_unaligned.append(
                    {
                        "line": example.line,
                        "utterance": example.utterance,
                        "logical_form": example.logical_form,
                        "reason": reason,
                    }
                )
            continue
        report.aligned += 1
        indices = [i for i in map(pointer_index, tokens) if i is not None]
        report.max_pointer_index = max([report.max_pointer_index, *indices])
    return report
