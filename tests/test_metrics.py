from __future__ import annotations

import pytest

from mtop_edge.forms import parse
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
