"""The target vocabulary of the pointer format, and the label pairs seen in training.

Targets use only intent labels (``[IN:X``), slot labels (``[SL:Y``), ``]`` and pointers
(``@ptrN``), plus EOS: a few hundred symbols, which is what lets the exported decoder drop the
rest of the model's vocabulary.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Protocol

from mtop_edge.core.forms import CLOSE, Intent
from mtop_edge.core.pointer import pointer_token, split_words


class Labelled(Protocol):
    """A row with an utterance and its gold tree (``data.Example`` is one)."""

    utterance: str
    tree: Intent


@dataclass(frozen=True)
class TargetVocab:
    """Labels and pointer count, plus which labels were seen together in training.

    ``intent_slots[I]`` lists the slots seen directly under intent I, ``slot_intents[S]`` the
    intents seen nested in slot S, ``root_intents`` the intents seen at the root.
    """

    intents: tuple[str, ...]
    slots: tuple[str, ...]
    max_pointers: int
    root_intents: tuple[str, ...] = ()
    intent_slots: dict[str, tuple[str, ...]] = field(default_factory=dict)
    slot_intents: dict[str, tuple[str, ...]] = field(default_factory=dict)

    @property
    def symbols(self) -> list[str]:
        """Every target symbol, in a fixed order: intents, slots, ``]``, pointers."""
        return [
            *("[" + label for label in self.intents),
            *("[" + label for label in self.slots),
            CLOSE,
            *(pointer_token(i) for i in range(self.max_pointers)),
        ]

    @classmethod
    def from_examples(cls, examples: Iterable[Labelled], *, min_pointers: int = 0) -> TargetVocab:
        """Collect labels and pairs; pointers cover the longest utterance (and ``min_pointers``)."""
        intents: set[str] = set()
        slots: set[str] = set()
        roots: set[str] = set()
        intent_slots: dict[str, set[str]] = {}
        slot_intents: dict[str, set[str]] = {}
        longest = 0
        for example in examples:
            longest = max(longest, len(split_words(example.utterance)))
            roots.add(example.tree.label)
            for intent in example.tree.walk_intents():
                intents.add(intent.label)
                under = intent_slots.setdefault(intent.label, set())
                for slot in intent.slots:
                    slots.add(slot.label)
                    under.add(slot.label)
                    if isinstance(slot.value, Intent):
                        slot_intents.setdefault(slot.label, set()).add(slot.value.label)
        return cls(
            intents=tuple(sorted(intents)),
            slots=tuple(sorted(slots)),
            max_pointers=max(longest, min_pointers),
            root_intents=tuple(sorted(roots)),
            intent_slots={k: tuple(sorted(v)) for k, v in sorted(intent_slots.items())},
            slot_intents={k: tuple(sorted(v)) for k, v in sorted(slot_intents.items())},
        )

    def to_json(self) -> dict:
        return {
            "intents": list(self.intents),
            "slots": list(self.slots),
            "max_pointers": self.max_pointers,
            "root_intents": list(self.root_intents),
            "intent_slots": {k: list(v) for k, v in self.intent_slots.items()},
            "slot_intents": {k: list(v) for k, v in self.slot_intents.items()},
        }

    @classmethod
    def from_json(cls, data: dict) -> TargetVocab:
        return cls(
            intents=tuple(data["intents"]),
            slots=tuple(data["slots"]),
            max_pointers=int(data["max_pointers"]),
            root_intents=tuple(data.get("root_intents", ())),
            intent_slots={k: tuple(v) for k, v in data.get("intent_slots", {}).items()},
            slot_intents={k: tuple(v) for k, v in data.get("slot_intents", {}).items()},
        )
