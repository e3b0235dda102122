"""Grammar-constrained decoding: only well-formed trees, under any logits, batch drops and step caps."""

from __future__ import annotations

import itertools
import json
from pathlib import Path

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from mtop_edge.core.forms import Intent
from mtop_edge.core.pointer import split_words
from mtop_edge.core.spec import PointerSpec
from mtop_edge.core.vocab import TargetVocab
from mtop_edge.runtime import Parser
from mtop_edge.runtime.grammar import ConstrainedBatch, Grammar

from .conftest import SAMPLES, distinct_words

ROOT = Path(__file__).resolve().parents[1]
EVAL_ROWS = [json.loads(line) for line in (SAMPLES / "eval_sample.jsonl").read_text().splitlines()]


def test_constrained_output_is_always_well_formed(tiny_export):
    parser = Parser.load(tiny_export[0])
    results = parser.parse_batch([row["utterance"] for row in EVAL_ROWS], strict=False)
    assert all(r.ok for r in results), [r.error for r in results if not r.ok][:3]
    unconstrained = Parser.load(tiny_export[0], constraints="none").parse_batch(
        [row["utterance"] for row in EVAL_ROWS], strict=False
    )
    assert not all(r.ok for r in unconstrained)  # the tiny model needs the grammar


def test_no_decoder_step_runs_once_every_tree_is_closed(tiny_export):
    """With the grammar, EOS after a closed tree is forced: the loop writes it without a step."""
    parser = Parser.load(tiny_export[0])
    runs = []

    class CountingSession:  # the decoder runs its sessions' C objects (``_sess``) directly
        def __init__(self, session):
            self.session, self._sess = session, self

        def __getattr__(self, name):  # io_binding, get_inputs, get_outputs
            return getattr(self.session, name)

        def run_with_iobinding(self, binding, options):
            runs.append(1)
            return self.session._sess.run_with_iobinding(binding, options)

    # one decoder graph gives every id, the first one too (the encoder returns the cross-attention keys/values)
    decoder = parser.decoder
    assert decoder.first is decoder.step and decoder.plan.first == decoder.plan.step
    one_row = decoder.plan.calls(1)[1].file  # the step a one-row call runs (no row groups)
    decoder.sessions[one_row] = CountingSession(decoder.sessions[one_row])  # the loop runs them by file
    for row in EVAL_ROWS[:20]:
        source = parser.source.prepare(row["utterance"])
        runs.clear()
        decoded = parser.decode_ids([source.ids], [len(source.words)])
        assert decoded.ended == [True]
        assert len(runs) == len(decoded.ids[0])  # EOS would take one more step, the forced EOS none


def make_spec(vocab: TargetVocab) -> PointerSpec:
    return PointerSpec(vocab=vocab, symbol_ids=tuple(range(10, 10 + len(vocab.symbols))))


VOCAB = TargetVocab(
    intents=("IN:A", "IN:B", "IN:C"),
    slots=("SL:X", "SL:Y"),
    max_pointers=12,
    root_intents=("IN:A", "IN:B"),
    intent_slots={"IN:A": ("SL:X", "SL:Y"), "IN:B": ("SL:Y",), "IN:C": ("SL:X",)},
    slot_intents={"SL:Y": ("IN:C",)},
)


@settings(max_examples=150, deadline=None)
@given(
    seed=st.integers(0, 2**32 - 1),
    n_words=st.lists(st.integers(1, 12), min_size=1, max_size=6),
    cap=st.integers(3, 30),
    use_pairs=st.booleans(),
    untrimmed=st.booleans(),
)
def test_random_logits_always_decode_to_well_formed_trees(seed, n_words, cap, use_pairs, untrimmed):
    spec = make_spec(VOCAB)
    columns = spec.decoder_vocabulary()
    grammar = Grammar(spec, columns, use_pairs=use_pairs)
    # an untrimmed decoder has more ids than the grammar's columns; they must be ignored
    vocab_size = max(columns) + 5 if untrimmed else len(columns)
    outputs = _decode_random_logits(grammar, n_words, cap, seed, vocab_size, np.asarray(columns) if untrimmed else None)
    for row, ids in enumerate(outputs):
        original = [columns[i] for i in ids] if not untrimmed else ids
        utterance = " ".join(distinct_words(n_words[row]))  # exactly n_words[row] words
        assert len(split_words(utterance)) == n_words[row]
        _assert_pointer_runs([spec._symbol_of_id.get(i, "") for i in original], n_words[row])
        tree = spec.decode(original, utterance, split_words(utterance))  # raises if malformed
        assert isinstance(tree, Intent)
        if use_pairs:
            assert tree.label in VOCAB.root_intents
            for intent in tree.walk_intents():
                assert all(s.label in VOCAB.intent_slots[intent.label] for s in intent.slots)
                for slot in intent.slots:  # only intents seen nested in that slot may nest there
                    if isinstance(slot.value, Intent):
                        assert slot.value.label in VOCAB.slot_intents[slot.label]


def _decode_random_logits(grammar, n_words, cap, seed, vocab_size, columns=None) -> list[list[int]]:
    """Constrained greedy picks over random logits until every row ends (it must, within ``cap``)."""
    rng = np.random.default_rng(seed)
    state = ConstrainedBatch(grammar, n_words, columns)
    chosen = np.empty(len(n_words), dtype=np.int64)
    outputs: list[list[int]] = [[] for _ in n_words]
    for t in range(cap):
        state.pick(rng.normal(scale=5.0, size=(len(n_words), vocab_size)).astype(np.float32), cap - t, chosen)
        for row, token in enumerate(chosen.tolist()):
            outputs[row].append(token)
        if state.finished.all():
            break
    assert state.finished.all()
    return outputs


@settings(max_examples=80, deadline=None)
@given(
    seed=st.integers(0, 2**32 - 1),
    n_words=st.lists(st.integers(1, 12), min_size=2, max_size=6),
    cap=st.integers(6, 30),
    separated=st.booleans(),
    data=st.data(),
)
def test_rows_kept_after_a_drop_pick_what_they_would_have(seed, n_words, cap, separated, data):
    """`ConstrainedBatch.keep` (rows leaving the decoder's batch) leaves the kept rows' states as they
    were: fed the same logits rows, they pick the same ids as in the batch that kept everyone."""
    spec = PointerSpec(
        vocab=VOCAB, symbol_ids=tuple(range(10, 10 + len(VOCAB.symbols))), separator_id=5 if separated else None
    )
    grammar = Grammar(spec, spec.decoder_vocabulary())
    rng = np.random.default_rng(seed)
    logits = rng.normal(scale=5.0, size=(cap, len(n_words), grammar.size)).astype(np.float32)
    drop_at = data.draw(st.integers(1, cap - 1))
    keep = np.array(data.draw(st.lists(st.booleans(), min_size=len(n_words), max_size=len(n_words))))
    keep[data.draw(st.integers(0, len(n_words) - 1))] = True  # at least one row goes on
    whole, part = ConstrainedBatch(grammar, n_words), ConstrainedBatch(grammar, n_words)
    picked_whole, picked_part = np.empty(len(n_words), dtype=np.int64), np.empty(len(n_words), dtype=np.int64)
    for t in range(cap):
        if t == drop_at:
            part.keep(keep)
        rows = keep if t >= drop_at else np.ones(len(n_words), dtype=bool)
        whole.pick(logits[t], cap - t, picked_whole)
        part.pick(np.ascontiguousarray(logits[t][rows]), cap - t, picked_part[: rows.sum()])
        assert picked_part[: rows.sum()].tolist() == picked_whole[rows].tolist()
    assert part.finished.tolist() == whole.finished[keep].tolist()
    assert part.root_closed.tolist() == whole.root_closed[keep].tolist()


def _assert_pointer_runs(symbols: list[str], n_words: int) -> None:
    """The tree rules on pointers, checked on the symbols themselves: inside a slot they are
    consecutive word indices below the word count, and they appear nowhere else."""
    from mtop_edge.core.pointer import pointer_index

    stack: list[str] = []
    previous: int | None = None
    for symbol in symbols:
        if symbol == "":  # EOS
            break
        index = pointer_index(symbol)
        if index is not None:
            assert stack and stack[-1].startswith("[SL:"), f"pointer {symbol} outside a slot"
            assert index < n_words and (previous is None or index == previous + 1), symbols
            previous = index
        elif symbol == "]":
            stack.pop()
            previous = None
        else:
            stack.append(symbol)
            previous = None


def test_outputs_closed_at_the_step_cap_are_flagged(tiny_export):
    utterances = [row["utterance"] for row in EVAL_ROWS[:20]]
    capped = Parser.load(tiny_export[0], max_steps=6).parse_batch(utterances)
    assert all(r.ok for r in capped)  # the grammar still closes every tree...
    flagged = [r for r in capped if r.capped]
    assert flagged and all(r.to_json()["capped"] is True for r in flagged)  # ...and says it had to
    free = Parser.load(tiny_export[0], max_steps=6, constraints="none").parse_batch(utterances, strict=False)
    assert all(r.capped for r in free if not r.ok and "no end of sequence" in r.error)


@settings(max_examples=100, deadline=None)
@given(
    seed=st.integers(0, 2**32 - 1),
    n_words=st.lists(st.integers(1, 12), min_size=1, max_size=6),
    cap=st.integers(5, 40),
    close_needs_separator=st.booleans(),
)
def test_separated_models_get_a_separator_before_each_symbol_but_the_first(seed, n_words, cap, close_needs_separator):
    """DAMP-style targets: ``[IN:X ▁ [SL:Y ▁ <pt-2> ▁] ▁]`` (or ``▁ ]`` when ']' is not self-spaced)."""
    separator = 5
    spec = PointerSpec(
        vocab=VOCAB,
        symbol_ids=tuple(range(10, 10 + len(VOCAB.symbols))),
        separator_id=separator,
        close_needs_separator=close_needs_separator,
    )
    columns = spec.decoder_vocabulary()
    grammar = Grammar(spec, columns)
    outputs = _decode_random_logits(grammar, n_words, cap, seed, len(columns))
    close = spec.symbol_ids[spec.symbols.index("]")]
    for row, exported in enumerate(outputs):
        ids = [columns[i] for i in exported]
        body = ids[: ids.index(spec.eos_id)]
        for previous, current in itertools.pairwise(body):
            needs = current != separator and (current != close or close_needs_separator)
            assert (previous == separator) == needs, body
        assert body[0] != separator and body[-1] != separator
        utterance = " ".join(distinct_words(n_words[row]))
        assert isinstance(spec.decode(body, utterance, split_words(utterance)), Intent)
