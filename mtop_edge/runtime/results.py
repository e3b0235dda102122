"""Typed parse results with ``to_json()``."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

from mtop_edge.core.forms import Intent, serialize


@dataclass(frozen=True)
class SlotResult:
    """A slot: its label and either its text (an exact utterance substring, with offsets) or a nested
    intent; ``confidence``: the probability of its label, pointers and closing bracket."""

    label: str
    text: str | None
    start: int | None
    end: int | None
    intent: IntentResult | None = None
    confidence: float | None = None

    def to_json(self) -> dict:
        score = {} if self.confidence is None else {"confidence": round(self.confidence, 4)}
        if self.intent is not None:
            return {"label": self.label, "intent": self.intent.to_json(), **score}
        return {"label": self.label, "text": self.text, "start": self.start, "end": self.end, **score}


@dataclass(frozen=True)
class IntentResult:
    """An intent and its slots; ``confidence``: the probability of the step that chose its label."""

    label: str
    slots: tuple[SlotResult, ...]
    confidence: float | None = None

    def to_json(self) -> dict:
        score = {} if self.confidence is None else {"confidence": round(self.confidence, 4)}
        return {"intent": self.label, **score, "slots": [s.to_json() for s in self.slots]}

    @classmethod
    def from_tree(cls, tree: Intent, utterance: str, confidences: Iterator[float] | None = None) -> IntentResult:
        """``confidences``: the tree's node confidences in preorder (intent, then each slot and what it holds)."""
        scores = confidences if confidences is not None else iter(())
        own = next(scores, None)
        slots = []
        for slot in tree.slots:
            score = next(scores, None)
            if isinstance(slot.value, Intent):
                nested = cls.from_tree(slot.value, utterance, scores)
                slots.append(SlotResult(slot.label, None, None, None, nested, score))
            else:
                start, end = slot.span
                slots.append(SlotResult(slot.label, utterance[start:end], start, end, confidence=score))
        return cls(tree.label, tuple(slots), own)


@dataclass(frozen=True)
class ParseResult:
    """One utterance's parse. ``error`` is set (and the tree None) when the input was rejected or
    the output was not a well-formed tree (possible only with constraints off).

    ``confidence`` is the probability of the decoded sequence (each step's renormalised over what
    the grammar allowed; `runtime/confidence.py`); ``understood`` is False below the parser's
    ``min_confidence`` (the tree is still given) or when there is no tree.
    """

    utterance: str
    tree: Intent | None
    error: str | None = None
    truncated: bool = False
    rejected: bool = False  # the input was refused (empty, too long): nothing was decoded
    capped: bool = False  # decoding hit the step cap: the grammar closed the tree (constrained) or it was cut
    confidence: float | None = None
    node_confidences: tuple[float, ...] = ()  # preorder: the intent, then each slot and what it holds
    understood: bool = True

    @property
    def ok(self) -> bool:
        return self.tree is not None

    @property
    def logical_form(self) -> str | None:
        return serialize(self.tree) if self.tree is not None else None

    @property
    def intent(self) -> IntentResult | None:
        if self.tree is None:
            return None
        return IntentResult.from_tree(self.tree, self.utterance, iter(self.node_confidences))

    def to_json(self) -> dict:
        result: dict = {"utterance": self.utterance, "logical_form": self.logical_form}
        intent = self.intent
        result["intent"] = intent.label if intent else None
        if self.confidence is not None:
            result["confidence"] = round(self.confidence, 4)
        if intent is not None and intent.confidence is not None:
            result["intent_confidence"] = round(intent.confidence, 4)
        result["understood"] = self.understood and self.tree is not None
        result["slots"] = [s.to_json() for s in intent.slots] if intent else []
        if self.truncated:
            result["truncated"] = True
        if self.capped:
            result["capped"] = True
        if self.error:
            result["error"] = self.error
        return result
