"""Grammar-constrained decoding: a small stack machine over the exported decoder's ids.

Only well-formed pointer trees can come out: an intent at the root, slots inside intents, an
intent or pointers inside a slot, pointers below the number of source words and consecutive
within a slot (a slot is one contiguous run of words), ``]`` and EOS only where the tree allows,
and, when the manifest records them, only label pairs seen in training (slots under an intent,
intents nested in a slot, intents at the root). Near the step cap only moves that can still close
the tree in time are allowed, so the cap never cuts a tree open.

Models trained elsewhere may put a separator piece (a space) before every symbol but the first
(DAMP's ``[IN:X ▁ [SL:Y ▁ <pt-2> ▁] ▁]``): the grammar then asks for a separator after each
symbol and for a symbol after each separator, allowing a self-spaced ``▁]`` in place of the pair.

Each state owns a row of an additive bias table (0 = allowed, -inf = not), so one step for the
whole batch is a gather, two adds and an argmax; only the stack update is per row.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from mtop_edge.core.forms import INTENT_PREFIX, SLOT_PREFIX
from mtop_edge.core.pointer import CLOSE, pointer_index
from mtop_edge.core.spec import PointerSpec
from mtop_edge.runtime.confidence import chosen_logprobs

OTHER, INTENT, SLOT, CLOSER, POINTER, EOS, PAD, SEPARATOR = range(8)
# fixed states; per-label and per-pointer states follow
ROOT, END, DONE, CLOSE_ONLY, POINTERS_ONLY = range(5)


class Grammar:
    """Bias tables and transitions for one exported model."""

    def __init__(self, spec: PointerSpec, decoder_ids: Sequence[int], *, use_pairs: bool = True) -> None:
        size = len(decoder_ids)
        vocab = spec.vocab
        intent_index = {label: i for i, label in enumerate(vocab.intents)}
        slot_index = {label: i for i, label in enumerate(vocab.slots)}
        self.kind, self.arg, ids = _classify(spec, decoder_ids, intent_index, slot_index)
        intent_ids, slot_ids, pointer_ids = ids["intents"], ids["slots"], ids["pointers"]
        close_id, eos_id, pad_id, separator_id = ids["close"], ids["eos"], ids["pad"], ids["separator"]
        if min(close_id, eos_id, pad_id) < 0:
            raise ValueError("the exported decoder lacks ']', EOS or PAD")
        self.size, self.pad_id, self.eos_id = size, pad_id, eos_id
        self.pointer_ids = pointer_ids
        self.intent_base = 5
        self.slot_base = self.intent_base + len(vocab.intents)
        self.pointer_base = self.slot_base + len(vocab.slots)
        n_states = self.pointer_base + vocab.max_pointers

        allowed = np.zeros((n_states, size), dtype=bool)
        pairs = use_pairs and bool(vocab.intent_slots)

        def ids_of(labels: Sequence[str], index: dict[str, int], table: np.ndarray) -> np.ndarray:
            return table[[index[label] for label in labels if label in index]]

        allowed[ROOT, ids_of(vocab.root_intents, intent_index, intent_ids) if pairs else intent_ids] = True
        allowed[END, eos_id] = True
        allowed[DONE, pad_id] = True
        allowed[CLOSE_ONLY, close_id] = True
        allowed[POINTERS_ONLY, pointer_ids] = True
        for k, label in enumerate(vocab.intents):
            row = self.intent_base + k
            allowed[row, close_id] = True
            allowed[row, ids_of(vocab.intent_slots.get(label, ()), slot_index, slot_ids) if pairs else slot_ids] = True
        for k, label in enumerate(vocab.slots):
            row = self.slot_base + k
            allowed[row, pointer_ids] = True
            nested = ids_of(vocab.slot_intents.get(label, ()), intent_index, intent_ids) if pairs else intent_ids
            allowed[row, nested] = True
        for k in range(vocab.max_pointers):
            row = self.pointer_base + k
            allowed[row, close_id] = True
            if k + 1 < vocab.max_pointers:
                allowed[row, pointer_ids[k + 1]] = True
        self.separated = spec.separator_id is not None
        if self.separated:
            if separator_id < 0:
                raise ValueError("the exported decoder lacks the separator piece")
            self.close_id, self.separator_id = close_id, separator_id
            self.close_needs_separator = spec.close_needs_separator
            # extra rows: separator only; separator or ']'; then each state without ']' (after a separator)
            self.separator_only, self.separator_or_close, self.no_close_base = n_states, n_states + 1, n_states + 2
            extra = np.zeros((2, size), dtype=bool)
            extra[:, separator_id] = True
            extra[1, close_id] = True
            no_close = allowed.copy()
            no_close[:, close_id] = False
            allowed = np.concatenate([allowed, extra, no_close])
            self.opens = np.ones(size, dtype=bool)  # the ids a separator can lead to
            self.opens[[close_id, eos_id, pad_id, separator_id]] = False
        self.bias = np.where(allowed, 0.0, -np.inf).astype(np.float32)
        if self.separated:
            self.open_bias = np.ascontiguousarray(self.bias[:, self.opens])  # sliced once, not per step

    def separated_state(self, state: int, pending: bool, open_length_bias: np.ndarray) -> int:
        """The state of a row of a separated model: ``pending`` = the last id was a symbol (or ``]``),
        so a separator (or a self-spaced ``]``) comes next; else the last id was a separator.
        ``open_length_bias``: the row's length bias over the ids a separator can lead to."""
        if state in (END, DONE, ROOT):
            return state
        if not pending:
            return state if self.close_needs_separator else self.no_close_base + state
        if self.close_needs_separator:
            return self.separator_only
        if np.isfinite(self.open_bias[state] + open_length_bias).any():
            return self.separator_or_close if self.bias[state, self.close_id] == 0 else self.separator_only
        return CLOSE_ONLY

    def length_bias(self, n_words: Sequence[int]) -> np.ndarray:
        """Per row: -inf for pointers at or past the row's word count."""
        bias = np.zeros((len(n_words), self.size), dtype=np.float32)
        for row, n in enumerate(n_words):
            bias[row, self.pointer_ids[n:]] = -np.inf
        return bias

    def start(self) -> list:
        """A fresh row: an empty stack (frames are [kind, label, last pointer or -1, holds intent])."""
        return []

    def state(self, stack: list, finished: bool, root_closed: bool, steps_left: int) -> int:
        """The state id for the row's next token, tightened when the cap is near."""
        if finished:
            return DONE
        if root_closed:
            return END
        if not stack:
            return ROOT
        kind, label, last, holds_intent = stack[-1]
        depth = len(stack)
        # need = fewest tokens that still finish the tree (its closes, a pointer for an empty
        # slot, EOS); a move is allowed only if what it leaves still fits in the steps left.
        if kind == INTENT:  # need depth + 1; opening a slot adds 2 (pointer, close)
            return CLOSE_ONLY if steps_left <= depth + 3 else self.intent_base + label
        if holds_intent:
            return CLOSE_ONLY
        if last >= 0:  # need depth + 1; another pointer needs one step more
            return CLOSE_ONLY if steps_left <= depth + 1 else self.pointer_base + last
        # empty slot: need depth + 2; a nested intent needs one step more than a pointer
        return POINTERS_ONLY if steps_left <= depth + 2 else self.slot_base + label

    def advance(self, stack: list, token: int) -> bool:
        """Apply an allowed token to the stack; True when the root intent has just closed."""
        kind = self.kind[token]
        if kind == INTENT:
            stack.append([INTENT, int(self.arg[token]), -1, False])
        elif kind == SLOT:
            stack.append([SLOT, int(self.arg[token]), -1, False])
        elif kind == POINTER:
            stack[-1][2] = int(self.arg[token])
        elif kind == CLOSER:
            closed = stack.pop()
            if not stack:
                return True
            if closed[0] == INTENT:
                stack[-1][3] = True
        return False


def _classify(spec: PointerSpec, decoder_ids: Sequence[int], intent_index: dict, slot_index: dict):
    """Each exported id's kind and argument (label or pointer index), and the ids of each kind."""
    vocab = spec.vocab
    size = len(decoder_ids)
    kind = np.full(size, OTHER, dtype=np.int8)
    arg = np.zeros(size, dtype=np.int64)
    symbol_of = dict(zip(spec.symbol_ids, spec.symbols, strict=True))
    ids = {
        "intents": np.zeros(len(vocab.intents), dtype=np.int64),
        "slots": np.zeros(len(vocab.slots), dtype=np.int64),
        "pointers": np.zeros(vocab.max_pointers, dtype=np.int64),
        "close": -1,
        "eos": -1,
        "pad": -1,
        "separator": -1,
    }
    for exported, original in enumerate(decoder_ids):
        symbol = symbol_of.get(original)
        if original == spec.eos_id:
            kind[exported], ids["eos"] = EOS, exported
        elif original == spec.separator_id:
            kind[exported], ids["separator"] = SEPARATOR, exported
        elif symbol is None:
            if original == spec.pad_id:
                kind[exported], ids["pad"] = PAD, exported
        elif symbol == CLOSE:
            kind[exported], ids["close"] = CLOSER, exported
        elif symbol.startswith("[" + INTENT_PREFIX):
            k = intent_index[symbol[1:]]
            kind[exported], arg[exported], ids["intents"][k] = INTENT, k, exported
        elif symbol.startswith("[" + SLOT_PREFIX):
            k = slot_index[symbol[1:]]
            kind[exported], arg[exported], ids["slots"][k] = SLOT, k, exported
        else:
            k = pointer_index(symbol)
            kind[exported], arg[exported], ids["pointers"][k] = POINTER, k, exported
    return kind, arg, ids


class ConstrainedBatch:
    """Per-batch decoding state under a grammar: one stack per row.

    ``columns`` maps grammar ids to the decoder's ids when the decoder was not trimmed (the
    grammar then looks only at the target columns of the logits); None when they coincide.
    """

    def __init__(self, grammar: Grammar, n_words: Sequence[int], columns: np.ndarray | None = None) -> None:
        batch = len(n_words)
        self.grammar = grammar
        self.columns = columns
        self.length_bias = grammar.length_bias(n_words)
        self.work = np.empty((batch, grammar.size), dtype=np.float32)
        self.picked = np.empty(batch, dtype=np.int64)
        self.stacks = [grammar.start() for _ in range(batch)]
        self.root_closed = np.zeros(batch, dtype=bool)
        self.finished = np.zeros(batch, dtype=bool)
        self.pending = [False] * batch  # separated models: the last id was a symbol
        if grammar.separated:
            self.open_length_bias = self.length_bias[:, grammar.opens]

    @property
    def complete(self) -> bool:
        """Every row's tree is closed: from here the grammar allows EOS, then PAD, and nothing else."""
        return bool(self.root_closed.all())

    def keep(self, rows: np.ndarray) -> None:
        """Only these rows (a boolean mask) go on: the decoder has dropped the others from its batch."""
        picked = rows.nonzero()[0].tolist()
        self.stacks = [self.stacks[r] for r in picked]
        self.pending = [self.pending[r] for r in picked]
        self.root_closed, self.finished = self.root_closed[rows], self.finished[rows]
        self.length_bias = self.length_bias[rows]
        self.work, self.picked = self.work[: len(picked)], self.picked[: len(picked)]
        if self.grammar.separated:
            self.open_length_bias = self.open_length_bias[rows]

    def pick(
        self,
        scores: np.ndarray,
        steps_left: int,
        chosen: np.ndarray,
        logprobs: np.ndarray | None = None,
        temperature: float = 1.0,
    ) -> None:
        """Write each row's best allowed next id (the decoder's ids) into ``chosen`` and, if given, its
        log-probability over the allowed ids into ``logprobs``; advance the stacks."""
        grammar, stacks, root_closed, finished = self.grammar, self.stacks, self.root_closed, self.finished
        closed, ended = root_closed.tolist(), finished.tolist()  # list items read faster than array items
        if grammar.separated:
            # each symbol may cost two steps: budget the cap in symbols, as seen from the step after
            # a separator (so the state a separator leads to is the one judged here)
            states = [
                grammar.separated_state(
                    grammar.state(stacks[r], ended[r], closed[r], (steps_left - self.pending[r]) // 2),
                    self.pending[r],
                    self.open_length_bias[r],
                )
                for r in range(len(stacks))
            ]
        else:
            states = [grammar.state(stacks[r], ended[r], closed[r], steps_left) for r in range(len(stacks))]
        # ndarray methods, not the np.* wrappers: this runs every step (about 6 of a pick's 19 us went there)
        grammar.bias.take(states, axis=0, out=self.work)
        self.work += scores if self.columns is None else scores[:, self.columns]
        self.work += self.length_bias
        self.work.argmax(axis=1, out=self.picked)
        chosen[:] = self.picked if self.columns is None else self.columns[self.picked]
        if logprobs is not None:
            chosen_logprobs(self.work, self.picked, logprobs, temperature)  # self.work is scratch from here
        for r, token in enumerate(self.picked.tolist()):
            if ended[r]:
                continue
            if grammar.separated:
                self.pending[r] = grammar.kind[token] != SEPARATOR
            if token == grammar.eos_id:
                finished[r] = True
            elif grammar.advance(stacks[r], token):
                root_closed[r] = True
