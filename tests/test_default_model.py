"""The embedded default model, as `pip install .` ships it: it must parse, and as well as its card says.

No torch here: this is what a runtime-only user gets.
"""

from __future__ import annotations

import json

from click.testing import CliRunner

from mtop_edge.cli import cli
from mtop_edge.data import read_examples
from mtop_edge.evaluate import evaluate
from mtop_edge.manifest import DEFAULT_MODEL_DIR, Manifest
from mtop_edge.runtime import Parser

from .conftest import SAMPLES

# matmuls may round differently across CPUs and thread counts: a row or two may flip
TOLERANCE = 0.01


def test_packaged_model_scores_what_its_manifest_records():
    manifest = Manifest.load(DEFAULT_MODEL_DIR)
    recorded = manifest.raw["evaluation"]["eval_sample"]
    examples = read_examples(SAMPLES / "eval_sample.jsonl")
    assert len(examples) >= 300 and recorded["n"] == len(examples)
    result = evaluate(Parser.load().parse_trees, examples, progress=False)
    assert abs(result.scores.exact_match - recorded["exact_match"]) <= TOLERANCE
    assert abs(result.scores.slot_f1 - recorded["slot_f1"]) <= TOLERANCE
    assert result.scores.well_formed == 1.0
    # and the full-eval figure the card quotes is the one recorded beside it
    assert manifest.raw["evaluation"]["eval"]["n"] == 2235


def test_packaged_model_is_small_and_complete():
    manifest = Manifest.load(DEFAULT_MODEL_DIR)
    size = sum(p.stat().st_size for p in DEFAULT_MODEL_DIR.iterdir() if p.is_file())
    assert size <= 30 * 10**6  # issue 29's budget for the int8 files
    assert manifest.quantization == "int8"  # its card: fp32 (~100 MB) is far over the budget
    assert manifest.raw["kind"] == "encoder-pointer"
    assert manifest.raw["source"]["sha256"] in (DEFAULT_MODEL_DIR / "README.md").read_text()


def test_quick_start_parses_with_the_default_model():
    result = CliRunner().invoke(cli, ["parse", "set an alarm"])
    assert result.exit_code == 0, result.output
    assert result.output.startswith("[IN:CREATE_ALARM")


def test_json_says_which_model_answered_and_gives_offsets():
    utterance = "wake me up at 7 tomorrow"
    result = CliRunner().invoke(cli, ["parse", "--json", utterance])
    assert result.exit_code == 0, result.output
    record = json.loads(result.output)
    model_id = Manifest.load(DEFAULT_MODEL_DIR).model_id
    assert record["model"] == model_id and model_id.startswith("minilm-pointer@4db1f2d760aa")
    # offsets checked against a hand count ("wake me up " is 11 characters), not against the slice they make
    (slot,) = record["slots"]
    assert {k: slot[k] for k in ("label", "text", "start", "end")} == {
        "label": "SL:DATE_TIME",
        "text": "at 7 tomorrow",
        "start": 11,
        "end": 24,
    }
    assert 0.5 < slot["confidence"] <= 1.0 and record["understood"] is True


def test_version_names_the_default_model():
    result = CliRunner().invoke(cli, ["--version"])
    assert result.exit_code == 0
    assert "default model: minilm-pointer@4db1f2d760aa" in result.output
