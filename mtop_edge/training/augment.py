"""Slot-value swapping: new training rows whose trees stay consistent with their utterances.

A leaf slot's text is replaced, in the utterance and in the tree alike, by the text of another
training slot with the same label ("wake me at [7am]" -> "wake me at [noon]"). The model sees
more slot values in more contexts, which is what a pointer model trained from scratch lacks.
"""

from __future__ import annotations

import random
from collections.abc import Sequence

from mtop_edge.core.forms import Intent, Slot
from mtop_edge.core.pointer import from_pointer_tokens, split_words
from mtop_edge.data import Example
from mtop_edge.datacheck import pointer_round_trip


def _with_spans(example: Example) -> Intent | None:
    tokens, _ = pointer_round_trip(example)
    if tokens is None:
        return None
    return from_pointer_tokens(tokens, example.utterance, split_words(example.utterance))


def _replace(intent: Intent, target: int, words: tuple[str, ...], counter: list[int]) -> Intent:
    """A copy of the tree with the ``target``-th slot (reading order) holding ``words``."""
    slots = []
    for slot in intent.slots:
        index = counter[0]
        counter[0] += 1
        if isinstance(slot.value, Intent):
            slots.append(Slot(slot.label, _replace(slot.value, target, words, counter)))
        elif index == target:
            slots.append(Slot(slot.label, words))
        else:
            slots.append(Slot(slot.label, slot.value))
    return Intent(intent.label, tuple(slots))


def swap_slot_values(examples: Sequence[Example], copies: int, seed: int) -> list[Example]:
    """``copies`` new rows per row that has a leaf slot, each with one slot value swapped."""
    if copies <= 0:
        return []
    rng = random.Random(seed)
    trees = [_with_spans(e) for e in examples]
    pool: dict[str, list[str]] = {}
    for example, tree in zip(examples, trees, strict=True):
        for slot in tree.walk_slots() if tree else ():
            if slot.span is not None:
                pool.setdefault(slot.label, []).append(example.utterance[slot.span[0] : slot.span[1]])
    new: list[Example] = []
    for example, tree in zip(examples, trees, strict=True):
        if tree is None:
            continue
        leaves = [(i, s) for i, s in enumerate(tree.walk_slots()) if s.span is not None]
        if not leaves:
            continue
        for _ in range(copies):
            index, slot = rng.choice(leaves)
            value = rng.choice(pool[slot.label])
            start, end = slot.span
            utterance = example.utterance[:start] + value + example.utterance[end:]
            new_tree = _replace(tree, index, tuple(value.split()), [0])
            new.append(Example(utterance, new_tree, example.path, example.line))
    return new
