from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from mtop_edge.cli import cli
from mtop_edge.core.forms import parse
from mtop_edge.data import Example
from mtop_edge.evaluate import evaluate

from .conftest import SAMPLES

ROWS = [
    Example("set an alarm for 7am", parse("[IN:CREATE_ALARM [SL:DATE_TIME for 7am ] ]")),
    Example("call Ann", parse("[IN:CREATE_CALL [SL:CONTACT Ann ] ]")),
    Example("weather in Paris", parse("[IN:GET_WEATHER [SL:LOCATION Paris ] ]")),
    Example("what alarms do I have", parse("[IN:GET_ALARM ]")),
]
OUTPUTS = {
    "set an alarm for 7am": parse("[IN:CREATE_ALARM [SL:DATE_TIME for 7 am ] ]"),
    "call Ann": parse("[IN:CREATE_CALL [SL:CONTACT Ann ] [SL:CONTACT Ann ] ]"),
    "weather in Paris": None,
    "what alarms do I have": parse("[IN:GET_ALARM ]"),
}


def test_evaluate_scores_hand_made_model_output():
    seen_batches = []

    def parse_batch(utterances):
        seen_batches.append(list(utterances))
        return [OUTPUTS[u] for u in utterances]

    result = evaluate(parse_batch, ROWS, batch_size=3, progress=False)
    assert seen_batches == [[r.utterance for r in ROWS[:3]], [ROWS[3].utterance]]
    s = result.scores
    assert (s.n, s.exact_match, s.intent_accuracy, s.well_formed) == (4, 0.5, 0.75, 0.75)
    # gold slots 3, predicted 3, correct 2
    assert s.slot_f1 == pytest.approx(2 / 3)
    assert result.examples_per_s > 0


def test_evaluate_cli_torch_engine(tiny_model):
    out, _ = tiny_model
    result = CliRunner().invoke(
        cli, ["evaluate", "--model", str(out), "--data", str(SAMPLES / "eval_sample.jsonl"), "--limit", "40", "--json"]
    )
    assert result.exit_code == 0, result.output
    report = json.loads(result.output)
    assert report["n"] == 40 and report["engine"] == "torch"
    for key in ("exact_match", "intent_accuracy", "slot_f1", "well_formed", "examples_per_s"):
        assert report[key] >= 0 and (key == "examples_per_s" or report[key] <= 1)
    assert report["well_formed"] > 0  # the tiny model has learned the bracket grammar in part


def test_evaluate_cli_missing_checkpoint_files(tmp_path):
    result = CliRunner().invoke(
        cli, ["evaluate", "--model", str(tmp_path), "--data", str(SAMPLES / "eval_sample.jsonl")]
    )
    assert result.exit_code == 1
    assert "neither an mtop-edge checkpoint (pointer.json)" in result.output
