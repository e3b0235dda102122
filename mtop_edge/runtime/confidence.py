"""How sure the parser is: probabilities of the decoded tokens, from the logits the loop already has.

Each step's chosen token gets its probability renormalised over the tokens the grammar allowed
(softmax of the masked scores, at the model's calibrated ``temperature``): the product over a
parse is its ``confidence``. A tree node's confidence is the product over the steps that made it:
an intent's label step; a slot's label, its pointers and the ``]`` that ends it (which fixes where
the span stops). The parse itself is still the greedy one: confidences never change a choice.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from mtop_edge.core.forms import INTENT_PREFIX, SLOT_PREFIX
from mtop_edge.core.pointer import CLOSE, POINTER_PREFIX


def chosen_logprobs(masked: np.ndarray, picked: np.ndarray, out: np.ndarray, temperature: float = 1.0) -> None:
    """``out[r]`` = log softmax(``masked[r]`` / temperature)[``picked[r]``], where ``picked`` is each
    row's argmax and disallowed scores are -inf. ``masked`` is used as scratch (overwritten)."""
    top = masked[np.arange(len(picked)), picked]
    masked -= top[:, None]
    if temperature != 1.0:
        masked *= 1.0 / temperature
    np.exp(masked, out=masked)
    np.log(masked.sum(axis=1), out=out)
    np.negative(out, out=out)


def node_confidences(symbols: Sequence[str | None], logprobs: Sequence[float]) -> list[float]:
    """Confidences of the tree's nodes in preorder (the order `from_pointer_tokens` builds them),
    from the decoded symbols and each step's log-probability. None marks a step that is no symbol
    (a separator piece): its probability goes to the symbol after it."""
    nodes: list[list[float]] = []  # [log-probability, is_slot]
    stack: list[list[float]] = []
    carried = 0.0
    for symbol, logprob in zip(symbols, logprobs, strict=False):
        if symbol is None:
            carried += logprob
            continue
        logprob, carried = logprob + carried, 0.0
        if symbol.startswith(("[" + INTENT_PREFIX, "[" + SLOT_PREFIX)):
            node = [logprob, symbol.startswith("[" + SLOT_PREFIX)]
            nodes.append(node)
            stack.append(node)
        elif stack and symbol == CLOSE:
            node = stack.pop()
            if node[1]:
                node[0] += logprob
        elif stack and symbol.startswith(POINTER_PREFIX) and stack[-1][1]:
            stack[-1][0] += logprob
    return [math.exp(node[0]) for node in nodes]
