from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from mtop_edge.core.forms import Intent, Slot, canonical, parse, same_parse, serialize
from mtop_edge.errors import FormError

LABEL = st.from_regex(r"[A-Z][A-Z_]{0,8}", fullmatch=True)
WORD = st.text(st.characters(blacklist_categories=("Z", "C"), blacklist_characters="[]"), min_size=1, max_size=6)


def intents(depth: int = 2) -> st.SearchStrategy[Intent]:
    leaf = st.builds(
        lambda label, words: Slot("SL:" + label, tuple(words)), LABEL, st.lists(WORD, min_size=1, max_size=4)
    )
    if depth == 0:
        slot = leaf
    else:
        nested = st.builds(lambda label, intent: Slot("SL:" + label, intent), LABEL, intents(depth - 1))
        slot = st.one_of(leaf, nested)
    return st.builds(lambda label, slots: Intent("IN:" + label, tuple(slots)), LABEL, st.lists(slot, max_size=3))


@given(intents())
def test_any_well_formed_tree_serializes_and_parses_back(tree):
    assert parse(serialize(tree)) == tree


def test_nested_intent_inside_slot():
    text = "[IN:UPDATE_REMINDER [SL:TODO [IN:GET_TODO [SL:TODO pick up kids ] ] ] [SL:DATE_TIME at 5pm ] ]"
    tree = parse(text)
    assert tree.label == "IN:UPDATE_REMINDER"
    nested = tree.slots[0].value
    assert isinstance(nested, Intent) and nested.label == "IN:GET_TODO"
    assert nested.slots[0].text == "pick up kids"
    assert serialize(tree) == text
    assert [i.label for i in tree.walk_intents()] == ["IN:UPDATE_REMINDER", "IN:GET_TODO"]


def test_parse_tolerates_irregular_spacing():
    assert serialize(parse("  [IN:A [SL:B x  y]]\n")) == "[IN:A [SL:B x y ] ]"


def test_canonical_ignores_whitespace_inside_slot_text_only():
    a = parse("[IN:A [SL:B 7 am ] ]")
    assert same_parse(a, parse("[IN:A [SL:B 7am ] ]"))
    assert not same_parse(a, parse("[IN:A [SL:C 7am ] ]"))
    assert not same_parse(a, parse("[IN:B [SL:B 7am ] ]"))
    assert not same_parse(a, parse("[IN:A [SL:B 7 pm ] ]"))
    assert not same_parse(a, None)
    assert canonical(parse("[IN:A [SL:B [IN:C ] ] ]")) != canonical(parse("[IN:A [SL:B C ] ]"))


@pytest.mark.parametrize(
    ("text", "position", "message"),
    [
        ("", 0, "empty logical form"),
        ("hello", 0, "expected '[IN:' at the root"),
        ("[SL:A x ]", 0, "expected '[IN:' at the root"),
        ("[IN:A x ]", 6, "expected '[SL:' or ']' inside intent"),
        ("[IN:A [IN:B ] ]", 6, "expected '[SL:' or ']' inside intent"),
        ("[IN:A [SL:B ] ]", 12, "empty slot 'SL:B'"),
        ("[IN:A [SL:B x", 13, "unclosed slot 'SL:B'"),
        ("[IN:A", 5, "unclosed intent 'IN:A'"),
        ("[IN:A ] ]", 8, "expected end of logical form"),
        ("[IN:A ] [IN:B ]", 8, "expected end of logical form"),
        ("[IN:A [SL:B x [IN:C ] ] ]", 14, "mixes words and a nested intent"),
        ("[IN:A [SL:B [IN:C ] x ] ]", 20, "expected ']' after the nested intent"),
        ("[IN:A [SL:B [XX:C ] ] ]", 12, "expected words, '[IN:' or ']' inside slot"),
        ("[IN: ]", 0, "expected a label '[IN:NAME'"),
        ("[IN:A [SL: x ] ]", 6, "expected a label '[SL:NAME'"),
    ],
)
def test_parse_errors_say_where_and_what(text, position, message):
    with pytest.raises(FormError) as info:
        parse(text)
    assert info.value.position == position
    assert message in str(info.value)
    assert str(info.value).startswith(f"at character {position}:")
