from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from mtop_edge.core.forms import Intent, Slot, parse, same_parse
from mtop_edge.core.pointer import (
    AlignmentError,
    from_pointer_tokens,
    pointer_index,
    split_words,
    to_pointer_tokens,
)
from mtop_edge.datacheck import pointer_round_trip
from mtop_edge.errors import FormError


def test_split_words_keeps_offsets_and_splits_digits_from_letters():
    utterance = "Wake me at 10PM, don't  forget!"
    words = split_words(utterance)
    assert [w.text for w in words] == ["Wake", "me", "at", "10", "PM", ",", "don", "'", "t", "forget", "!"]
    assert all(utterance[w.start : w.end] == w.text for w in words)


def test_reference_example():
    utterance = "set an alarm for 7am"
    words = split_words(utterance)
    tree = parse("[IN:CREATE_ALARM [SL:DATE_TIME for 7am ] ]")
    tokens = to_pointer_tokens(tree, words)
    assert tokens == ["[IN:CREATE_ALARM", "[SL:DATE_TIME", "@ptr3", "@ptr4", "@ptr5", "]", "]"]
    back = from_pointer_tokens(tokens, utterance, words)
    assert back == tree
    assert back.slots[0].span == (13, 20)


def test_slot_text_comes_from_the_utterance_exactly():
    utterance = "remind me at 7 : 30 pm"
    words = split_words(utterance)
    tree = parse("[IN:CREATE_REMINDER [SL:DATE_TIME at 7:30 pm ] ]")
    back = from_pointer_tokens(to_pointer_tokens(tree, words), utterance, words)
    slot = back.slots[0]
    assert utterance[slot.span[0] : slot.span[1]] == "at 7 : 30 pm"
    assert same_parse(back, tree)


def test_repeated_text_takes_the_leftmost_unused_run():
    utterance = "call Ann and Ann"
    tree = parse("[IN:CREATE_CALL [SL:CONTACT Ann ] [SL:CONTACT Ann ] ]")
    tokens = to_pointer_tokens(tree, split_words(utterance))
    assert [pointer_index(t) for t in tokens if pointer_index(t) is not None] == [1, 3]


def test_unaligned_slot_is_reported():
    with pytest.raises(AlignmentError, match="SL:CONTACT 'Bob' is not a run"):
        to_pointer_tokens(parse("[IN:CREATE_CALL [SL:CONTACT Bob ] ]"), split_words("call Ann"))
    # a slot that ends inside a word cannot be pointed to
    with pytest.raises(AlignmentError):
        to_pointer_tokens(parse("[IN:A [SL:B mom ] ]"), split_words("call moms"))


@pytest.mark.parametrize(
    ("tokens", "message"),
    [
        ([], "unexpected end"),
        (["[SL:A", "@ptr0", "]"], "expected an intent label at the root"),
        (["[IN:A", "@ptr0", "]"], "expected a slot label or ']'"),
        (["[IN:A", "[SL:B", "]", "]"], "empty slot SL:B"),
        (["[IN:A", "[SL:B", "@ptr9", "]", "]"], "past the last word"),
        (["[IN:A", "[SL:B", "@ptr1", "@ptr0", "]", "]"], "does not follow @ptr1"),
        (["[IN:A", "[SL:B", "word", "]", "]"], "expected a pointer, an intent or ']'"),
        (["[IN:A", "[SL:B", "[IN:C", "]", "@ptr0", "]", "]"], "expected ']' after the nested intent"),
        (["[IN:A", "]", "]"], "expected the end after the root intent"),
        (["[IN:A", "[SL:B", "@ptr0"], "unexpected end"),
    ],
)
def test_malformed_pointer_sequences(tokens, message):
    words = split_words("one two")
    with pytest.raises(FormError, match=message):
        from_pointer_tokens(tokens, "one two", words)


WORDS = st.lists(
    st.one_of(
        st.from_regex(r"[A-Za-zé]{1,5}", fullmatch=True),
        st.from_regex(r"[0-9]{1,3}", fullmatch=True),
        st.sampled_from([",", "'", "?", "-", ":"]),
    ),
    min_size=1,
    max_size=12,
)


@st.composite
def utterance_and_tree(draw):
    utterance = draw(st.sampled_from([" ", "  "])).join(draw(WORDS))
    words = split_words(utterance)

    def run_slot(label: str) -> Slot:
        i = draw(st.integers(0, len(words) - 1))
        j = draw(st.integers(i, min(i + 3, len(words) - 1)))
        return Slot(label, tuple(utterance[words[i].start : words[j].end].split()))

    def intent(depth: int) -> Intent:
        slots = []
        for k in range(draw(st.integers(0, 3))):
            if depth and draw(st.booleans()):
                slots.append(Slot(f"SL:N{k}", intent(depth - 1)))
            else:
                slots.append(run_slot(f"SL:S{k}"))
        return Intent(f"IN:I{depth}", tuple(slots))

    return utterance, intent(2)


@given(utterance_and_tree())
def test_tree_to_pointers_to_tree_is_identity_for_runs_of_words(case):
    utterance, tree = case
    words = split_words(utterance)
    back = from_pointer_tokens(to_pointer_tokens(tree, words), utterance, words)
    assert same_parse(back, tree)
    for slot in back.walk_slots():
        if slot.span is not None:
            assert "".join(utterance[slot.span[0] : slot.span[1]].split()) == "".join(slot.value)


def test_sample_rows_round_trip(train_sample, eval_sample):
    for example in [*train_sample, *eval_sample]:
        tokens, reason = pointer_round_trip(example)
        assert reason is None, (example.line, reason)
        assert tokens[0] == "[" + example.tree.label


def test_a_slot_is_one_run_of_words():
    # "@ptr1 @ptr3" would read as "Ann Smith now" if the gap were filled: every scorer without the grammar
    # (torch evaluate, training EM, parity, bench) would then count a wrong parse as right
    utterance = "call Ann Smith now"
    with pytest.raises(FormError, match="does not follow @ptr1"):
        from_pointer_tokens(["[IN:A", "[SL:B", "@ptr1", "@ptr3", "]", "]"], utterance, split_words(utterance))
    with pytest.raises(FormError, match="does not follow @ptr1"):
        from_pointer_tokens(["[IN:A", "[SL:B", "@ptr1", "@ptr1", "]", "]"], utterance, split_words(utterance))


def test_generated_ids_starting_with_pad_are_malformed():
    from mtop_edge.core.spec import PointerSpec
    from mtop_edge.core.vocab import TargetVocab

    vocab = TargetVocab(intents=("IN:A",), slots=("SL:B",), max_pointers=4)
    spec = PointerSpec(vocab=vocab, symbol_ids=tuple(range(10, 10 + len(vocab.symbols))))
    utterance = "call mom"
    words = split_words(utterance)
    ids = [10, 11, 13, 12, 12, spec.eos_id]  # [IN:A [SL:B @ptr0 ] ]
    assert spec.decode(ids, utterance, words).label == "IN:A"
    # PAD is the decoder start: it was silently skipped as a first output token, so such output passed as well-formed
    with pytest.raises(FormError, match="<id 0>"):
        spec.decode([spec.pad_id, *ids], utterance, words)


@pytest.mark.parametrize(
    ("utterance", "words"),
    [
        # Devanagari: vowel signs and the virama are combining marks; they stay inside their word
        ("मुझे कल सुबह सात बजे जगाना", ["मुझे", "कल", "सुबह", "सात", "बजे", "जगाना"]),
        # Thai is written without spaces: a letter run (marks included) is one word, digits apart
        ("ตั้งนาฬิกาปลุก 7 โมง", ["ตั้งนาฬิกาปลุก", "7", "โมง"]),
        # a decomposed accent (e + U+0301) belongs to its letter
        ("Cafe\u0301 au lait", ["Cafe\u0301", "au", "lait"]),
        ("don't call at 10PM", ["don", "'", "t", "call", "at", "10", "PM"]),
    ],
)
def test_words_keep_letters_with_their_marks(utterance, words):
    split = split_words(utterance)
    assert [w.text for w in split] == words
    # offsets never fall inside a character sequence: each word is exactly its slice
    assert all(utterance[w.start : w.end] == w.text for w in split)
    assert [w.start for w in split] == [
        utterance.index(text, split[i - 1].end if i else 0) for i, text in enumerate(words)
    ]


def test_slot_offsets_equal_mtops_own_span_column():
    # MTOP's TSV lists each top-level slot as start:end:label, computed by MTOP, not by us: the pointer
    # read-back and the runtime's result objects must reproduce those offsets exactly
    from mtop_edge.runtime.results import ParseResult

    from .conftest import DATA

    checked = 0
    for line in (DATA / "eval_sample.tsv").read_text().splitlines():
        columns = line.split("\t")
        utterance, tree = columns[3], parse(columns[6])
        mtop_spans = {}
        for item in filter(None, columns[2].split(",")):
            start, end, label = item.split(":", 2)
            mtop_spans.setdefault(label, []).append((int(start), int(end)))
        words = split_words(utterance)
        read_back = from_pointer_tokens(to_pointer_tokens(tree, words), utterance, words)
        for slot in ParseResult(utterance, read_back).to_json()["slots"]:
            if "text" in slot:  # top-level text slots: MTOP gives their spans
                assert (slot["start"], slot["end"]) in mtop_spans[slot["label"]], (utterance, slot)
                checked += 1
    assert checked >= 40
