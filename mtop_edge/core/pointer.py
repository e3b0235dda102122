"""The pointer format: slot words become pointers to source words, and back.

``set an alarm for 7am`` with ``[IN:CREATE_ALARM [SL:DATE_TIME for 7am ] ]`` becomes the target
``[IN:CREATE_ALARM [SL:DATE_TIME @ptr3 @ptr4 @ptr5 ] ]`` ("7am" is two words: 7, am). Reading
pointers back takes each slot's text straight from the utterance, so it comes with exact
character offsets. Training and inference share these functions.
"""

from __future__ import annotations

import unicodedata
from collections.abc import Sequence
from dataclasses import dataclass

from mtop_edge.core.forms import CLOSE, INTENT_PREFIX, SLOT_PREFIX, Intent, Slot
from mtop_edge.errors import FormError, MtopEdgeError

POINTER_PREFIX = "@ptr"


@dataclass(frozen=True)
class Word:
    """A source word and its [start, end) character offsets in the utterance."""

    text: str
    start: int
    end: int


class AlignmentError(MtopEdgeError):
    """A slot whose text is not a run of the utterance's words."""


def _is_letter(char: str) -> bool:
    return char.isalnum() and not char.isdecimal()


def _is_mark(char: str) -> bool:
    return unicodedata.category(char).startswith("M")


def split_words(utterance: str) -> list[Word]:
    """The deterministic word tokenizer used at training and at inference.

    Letter runs (with their combining marks: Devanagari vowel signs, Thai vowels, a decomposed
    accent), digit runs, and every other non-space character on its own: "10PM" -> 10, PM;
    "don't" -> don, ', t; "हिन्दी" stays one word. Finer than MTOP's tokens, so MTOP slot boundaries
    fall on our word edges. A script written without spaces (Thai, Chinese) gives one word per
    letter run, so a slot there can only cover whole runs.
    """
    words: list[Word] = []
    i, n = 0, len(utterance)
    while i < n:
        char = utterance[i]
        start = i
        i += 1
        if char.isspace():
            continue
        if char.isdecimal():
            while i < n and utterance[i].isdecimal():
                i += 1
        elif _is_letter(char):
            while i < n and (_is_letter(utterance[i]) or _is_mark(utterance[i])):
                i += 1
        words.append(Word(utterance[start:i], start, i))
    return words


def pointer_token(index: int) -> str:
    return f"{POINTER_PREFIX}{index}"


def pointer_index(token: str) -> int | None:
    """The word index of a pointer token, or None if the token is not a pointer."""
    if token.startswith(POINTER_PREFIX) and token[len(POINTER_PREFIX) :].isdigit():
        return int(token[len(POINTER_PREFIX) :])
    return None


def _squash(text: str) -> str:
    return "".join(text.split())


def _find_run(target: str, words: Sequence[Word], used: set[int]) -> tuple[int, int] | None:
    """The leftmost run of words (inclusive indices) whose concatenation is ``target``.

    Runs that overlap words taken by earlier slots are skipped first; if only such runs exist,
    the leftmost of them is used (two slots may then share words).
    """
    fallback = None
    for i in range(len(words)):
        joined = ""
        for j in range(i, len(words)):
            joined += words[j].text
            if len(joined) >= len(target):
                if joined == target:
                    if used.isdisjoint(range(i, j + 1)):
                        return i, j
                    fallback = fallback or (i, j)
                break
            if not target.startswith(joined):
                break
    return fallback


def to_pointer_tokens(tree: Intent, words: Sequence[Word]) -> list[str]:
    """The pointer target of a tree, e.g. ``[IN:X``, ``[SL:Y``, ``@ptr3``, ``]``, ``]``.

    Raises:
        AlignmentError: a slot's text (whitespace removed) is not a contiguous run of words.
    """
    tokens: list[str] = []
    used: set[int] = set()

    def emit(intent: Intent) -> None:
        tokens.append("[" + intent.label)
        for slot in intent.slots:
            tokens.append("[" + slot.label)
            if isinstance(slot.value, Intent):
                emit(slot.value)
            else:
                run = _find_run(_squash("".join(slot.value)), words, used)
                if run is None:
                    raise AlignmentError(
                        f"slot {slot.label} {' '.join(slot.value)!r} is not a run of the utterance's words"
                    )
                used.update(range(run[0], run[1] + 1))
                tokens.extend(pointer_token(k) for k in range(run[0], run[1] + 1))
            tokens.append(CLOSE)
        tokens.append(CLOSE)

    emit(tree)
    return tokens


def from_pointer_tokens(tokens: Sequence[str], utterance: str, words: Sequence[Word]) -> Intent:
    """Read a pointer target back into a tree whose slot texts are exact utterance substrings.

    Each text slot gets ``span`` = (start of its first word, end of its last word), and its words
    are that substring split on whitespace.

    Raises:
        FormError: the tokens do not form a well-formed tree (position = token index).
    """
    pos = 0

    def fail(message: str) -> FormError:
        return FormError(message, position=pos, unit="token")

    def peek() -> str:
        if pos >= len(tokens):
            raise fail("unexpected end of the pointer sequence")
        return tokens[pos]

    def parse_intent() -> Intent:
        nonlocal pos
        label = peek()[1:]
        pos += 1
        slots: list[Slot] = []
        while (tok := peek()) != CLOSE:
            if not tok.startswith("[" + SLOT_PREFIX):
                raise fail(f"expected a slot label or ']' inside intent {label}, found {tok!r}")
            slots.append(parse_slot())
        pos += 1
        return Intent(label, tuple(slots))

    def parse_slot() -> Slot:
        nonlocal pos
        label = peek()[1:]
        pos += 1
        if peek().startswith("[" + INTENT_PREFIX):
            nested = parse_intent()
            if peek() != CLOSE:
                raise fail(f"expected ']' after the nested intent of slot {label}, found {peek()!r}")
            pos += 1
            return Slot(label, nested)
        indices: list[int] = []
        while (tok := peek()) != CLOSE:
            index = pointer_index(tok)
            if index is None:
                raise fail(f"expected a pointer, an intent or ']' inside slot {label}, found {tok!r}")
            if index >= len(words):
                raise fail(f"pointer {tok} is past the last word (the utterance has {len(words)} words)")
            if indices and index != indices[-1] + 1:  # a slot is one run of words: no gaps, no repeats
                raise fail(f"pointer {tok} does not follow {pointer_token(indices[-1])} in slot {label}")
            indices.append(index)
            pos += 1
        if not indices:
            raise fail(f"empty slot {label}")
        pos += 1
        start, end = words[indices[0]].start, words[indices[-1]].end
        return Slot(label, tuple(utterance[start:end].split()), span=(start, end))

    if not peek().startswith("[" + INTENT_PREFIX):
        raise fail(f"expected an intent label at the root, found {peek()!r}")
    tree = parse_intent()
    if pos < len(tokens):
        raise fail(f"expected the end after the root intent, found {tokens[pos]!r}")
    return tree
