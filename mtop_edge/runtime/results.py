"""Typed parse results with ``to_json()``."""

from __future__ import annotations

from dataclasses import dataclass

from mtop_edge.core.forms import Intent, serialize


@dataclass(frozen=True)
class SlotResult:
    """A slot: its label and either its text (an exact utterance substring, with offsets) or a nested intent."""

    label: str
    text: str | None
    start: int | None
    end: int | None
    intent: IntentResult | None = None

    def to_json(self) -> dict:
        if self.intent is not None:
            return {"label": self.label, "intent": self.intent.to_json()}
        return {"label": self.label, "text": self.text, "start": self.start, "end": self.end}


@dataclass(frozen=True)
class IntentResult:
    label: str
    slots: tuple[SlotResult, ...]

    def to_json(self) -> dict:
        return {"intent": self.label, "slots": [s.to_json() for s in self.slots]}

    @classmethod
    def from_tree(cls, tree: Intent, utterance: str) -> IntentResult:
        slots = []
        for slot in tree.slots:
            if isinstance(slot.value, Intent):
                slots.append(SlotResult(slot.label, None, None, None, cls.from_tree(slot.value, utterance)))
            else:
                start, end = slot.span
                slots.append(SlotResult(slot.label, utterance[start:end], start, end))
        return cls(tree.label, tuple(slots))


@dataclass(frozen=True)
class ParseResult:
    """One utterance's parse. ``error`` is set (and the tree None) when the input was rejected or
    the output was not a well-formed tree (possible only with constraints off)."""

    utterance: str
    tree: Intent | None
    error: str | None = None
    truncated: bool = False
    rejected: bool = False  # the input was refused (empty, too long): nothing was decoded
    capped: bool = False  # decoding hit the step cap: the grammar closed the tree (constrained) or it was cut

    @property
    def ok(self) -> bool:
        return self.tree is not None

    @property
    def logical_form(self) -> str | None:
        return serialize(self.tree) if self.tree is not None else None

    @property
    def intent(self) -> IntentResult | None:
        return IntentResult.from_tree(self.tree, self.utterance) if self.tree is not None else None

    def to_json(self) -> dict:
        result: dict = {"utterance": self.utterance, "logical_form": self.logical_form}
        intent = self.intent
        result["intent"] = intent.label if intent else None
        result["slots"] = [s.to_json() for s in intent.slots] if intent else []
        if self.truncated:
            result["truncated"] = True
        if self.capped:
            result["capped"] = True
        if self.error:
            result["error"] = self.error
        return result
