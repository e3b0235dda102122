from __future__ import annotations

import pytest

from mtop_edge.core.forms import parse
from mtop_edge.metrics import score

GOLD = [
    parse("[IN:CREATE_ALARM [SL:DATE_TIME for 7am ] ]"),
    parse("[IN:GET_WEATHER [SL:LOCATION Paris ] [SL:DATE_TIME today ] ]"),
    parse("[IN:CREATE_CALL [SL:CONTACT Ann ] ]"),
    parse("[IN:GET_ALARM ]"),
]


def test_perfect_predictions():
    scores = score(GOLD, GOLD)
    assert (scores.exact_match, scores.intent_accuracy, scores.slot_f1, scores.well_formed) == (1, 1, 1, 1)


def test_hand_computed_scores():
    predictions = [
        parse("[IN:CREATE_ALARM [SL:DATE_TIME for 7 am ] ]"),  # exact (whitespace inside text ignored)
        parse("[IN:GET_WEATHER [SL:LOCATION Paris ] ]"),  # right intent, one of two slots
        None,  # malformed output
        parse("[IN:CREATE_ALARM [SL:DATE_TIME now ] ]"),  # wrong intent, spurious slot
    ]
    scores = score(GOLD, predictions)
    assert scores.n == 4
    assert scores.exact_match == 0.25
    assert scores.intent_accuracy == 0.5
    assert scores.well_formed == 0.75
    # gold slots 4, predicted 3, correct 2
    assert scores.slot_precision == pytest.approx(2 / 3)
    assert scores.slot_recall == pytest.approx(2 / 4)
    assert scores.slot_f1 == pytest.approx(2 * (2 / 3) * 0.5 / (2 / 3 + 0.5))


def test_length_mismatch_is_an_error():
    with pytest.raises(ValueError, match="4 gold trees but 1 predictions"):
        score(GOLD, GOLD[:1])


def test_slot_order_counts_for_exact_match():
    gold = [parse("[IN:GET_WEATHER [SL:LOCATION Paris ] [SL:DATE_TIME today ] ]")]
    swapped = [parse("[IN:GET_WEATHER [SL:DATE_TIME today ] [SL:LOCATION Paris ] ]")]
    scores = score(gold, swapped)
    # the tree is compared as written (as MTOP's logical-form strings are); slot F1 is order-free
    assert scores.exact_match == 0.0 and scores.slot_f1 == 1.0


def test_nested_slots_count_in_slot_f1():
    gold = [parse("[IN:CREATE_CALL [SL:CONTACT [IN:GET_CONTACT [SL:TYPE_RELATION mom ] ] ] ]")]
    wrong_inside = [parse("[IN:CREATE_CALL [SL:CONTACT [IN:GET_CONTACT [SL:TYPE_RELATION dad ] ] ] ]")]
    flat = [parse("[IN:CREATE_CALL [SL:CONTACT mom ] ]")]
    # gold slots: CONTACT (its value is the nested intent) and the nested TYPE_RELATION
    inside = score(gold, wrong_inside)
    assert (inside.slot_precision, inside.slot_recall) == (0.0, 0.0)  # the CONTACT value differs too
    assert score(gold, gold).slot_f1 == 1.0
    flattened = score(gold, flat)
    assert flattened.exact_match == 0.0 and flattened.slot_recall == 0.0 and flattened.slot_precision == 0.0
    half = score(gold, [parse("[IN:GET_CONTACT [SL:TYPE_RELATION mom ] ]")])
    assert (half.slot_precision, half.slot_recall) == (1.0, 0.5)  # the nested slot alone is found


def test_rejected_inputs_are_misses_but_not_malformed_outputs():
    from mtop_edge.metrics import Rejected

    predictions = [GOLD[0], Rejected("empty utterance"), None, GOLD[3]]
    scores = score(GOLD, predictions)
    assert scores.input_errors == 1
    assert scores.exact_match == 0.5  # the rejected row is a miss
    assert scores.well_formed == 2 / 3  # of the three outputs produced, two were trees
