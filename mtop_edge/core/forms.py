"""Logical forms: TOP bracket trees in MTOP's decoupled form.

A tree is an intent at the root, e.g. ``[IN:CREATE_ALARM [SL:DATE_TIME for 7am ] ]``. In the
decoupled form an intent holds only slots, and a slot holds either words or exactly one nested
intent. That is all the pointer format can express, so it is also all this module accepts.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass, field

from mtop_edge.errors import FormError

INTENT_PREFIX = "IN:"
SLOT_PREFIX = "SL:"
CLOSE = "]"
# Every non-space character belongs to exactly one of: a label opener, a close, a word.
_TOKEN_RE = re.compile(r"\[[^\s\[\]]*|\]|[^\s\[\]]+")
_LABEL_RE = re.compile(r"(IN|SL):[^\s\[\]]+\Z")


@dataclass(frozen=True)
class Slot:
    """A slot: a label and either its words or one nested intent.

    ``span`` (character offsets into the utterance) is set when the slot was read back from
    pointers; it takes no part in equality, which compares labels, structure and words.
    """

    label: str
    value: tuple[str, ...] | Intent
    span: tuple[int, int] | None = field(default=None, compare=False)

    @property
    def text(self) -> str | None:
        """The slot's words joined by spaces, or None when it holds an intent."""
        return None if isinstance(self.value, Intent) else " ".join(self.value)


@dataclass(frozen=True)
class Intent:
    """An intent: a label and its slots, in order."""

    label: str
    slots: tuple[Slot, ...] = ()

    def walk_slots(self) -> Iterator[Slot]:
        """Every slot in the tree, nested ones included, in reading order."""
        for slot in self.slots:
            yield slot
            if isinstance(slot.value, Intent):
                yield from slot.value.walk_slots()

    def walk_intents(self) -> Iterator[Intent]:
        """This intent and every nested one, in reading order."""
        yield self
        for slot in self.slots:
            if isinstance(slot.value, Intent):
                yield from slot.value.walk_intents()


def _tokenize(text: str) -> list[tuple[str, int]]:
    """Split a bracket string into tokens with their character positions.

    ``[`` always starts a label and ``]`` is always its own token, so ``[SL:X foo]`` reads as
    label, word, close.
    """
    return [(m.group(), m.start()) for m in _TOKEN_RE.finditer(text)]


def parse(text: str) -> Intent:
    """Parse a decoupled TOP bracket string into a tree.

    Raises:
        FormError: with the character position and what was expected there.
    """
    tokens = _tokenize(text)
    if not tokens:
        raise FormError("empty logical form", position=0)
    pos = 0

    def parse_intent() -> Intent:
        nonlocal pos
        tok, at = tokens[pos]
        label = _label(tok, at, INTENT_PREFIX)
        pos += 1
        slots: list[Slot] = []
        while True:
            if pos >= len(tokens):
                raise FormError(f"unclosed intent {label!r}: expected '[SL:' or ']'", position=len(text))
            tok, at = tokens[pos]
            if tok == CLOSE:
                pos += 1
                return Intent(label, tuple(slots))
            if tok.startswith("[" + SLOT_PREFIX):
                slots.append(parse_slot())
            else:
                raise FormError(f"expected '[SL:' or ']' inside intent {label!r}, found {tok!r}", position=at)

    def parse_slot() -> Slot:
        nonlocal pos
        tok, at = tokens[pos]
        label = _label(tok, at, SLOT_PREFIX)
        pos += 1
        words: list[str] = []
        nested: Intent | None = None
        while True:
            if pos >= len(tokens):
                raise FormError(f"unclosed slot {label!r}: expected words, '[IN:' or ']'", position=len(text))
            tok, at = tokens[pos]
            if tok == CLOSE:
                pos += 1
                if nested is not None:
                    return Slot(label, nested)
                if not words:
                    raise FormError(f"empty slot {label!r}: expected words or '[IN:' before ']'", position=at)
                return Slot(label, tuple(words))
            if nested is not None:
                raise FormError(f"expected ']' after the nested intent of slot {label!r}, found {tok!r}", at)
            if tok.startswith("[" + INTENT_PREFIX):
                if words:
                    raise FormError(f"slot {label!r} mixes words and a nested intent", position=at)
                nested = parse_intent()
            elif tok.startswith("["):
                raise FormError(f"expected words, '[IN:' or ']' inside slot {label!r}, found {tok!r}", at)
            else:
                words.append(tok)
                pos += 1

    first, at = tokens[0]
    if not first.startswith("[" + INTENT_PREFIX):
        raise FormError(f"expected '[IN:' at the root, found {first!r}", position=at)
    tree = parse_intent()
    if pos < len(tokens):
        tok, at = tokens[pos]
        raise FormError(f"expected end of logical form after the root intent, found {tok!r}", position=at)
    return tree


def _label(token: str, position: int, prefix: str) -> str:
    label = token[1:]
    if not label.startswith(prefix) or not _LABEL_RE.match(label):
        raise FormError(f"expected a label '[{prefix}NAME', found {token!r}", position=position)
    return label


def serialize(tree: Intent) -> str:
    """The bracket string of a tree: ``[IN:X [SL:Y words ] ]``."""
    return " ".join(_serialize_tokens(tree))


def _serialize_tokens(intent: Intent) -> Iterator[str]:
    yield "[" + intent.label
    for slot in intent.slots:
        yield "[" + slot.label
        if isinstance(slot.value, Intent):
            yield from _serialize_tokens(slot.value)
        else:
            yield from slot.value
        yield CLOSE
    yield CLOSE


def canonical(tree: Intent) -> tuple:
    """A hashable key under which two trees are equal exactly when they match.

    Labels and structure must be equal, and each slot's text must be equal once whitespace is
    removed (DESIGN.md: the exact-match metric).
    """
    return (tree.label, tuple(_canonical_slot(slot) for slot in tree.slots))


def slot_value_key(slot: Slot) -> str | tuple:
    """What a slot's value is compared by: its text without whitespace, or the nested intent's canonical key."""
    if isinstance(slot.value, Intent):
        return canonical(slot.value)
    return "".join("".join(w.split()) for w in slot.value)


def _canonical_slot(slot: Slot) -> tuple:
    return (slot.label, slot_value_key(slot))


def same_parse(a: Intent | None, b: Intent | None) -> bool:
    """Exact match; a missing (malformed) tree matches nothing."""
    return a is not None and b is not None and canonical(a) == canonical(b)
