from __future__ import annotations

import json

from click.testing import CliRunner

from mtop_edge import __version__
from mtop_edge.cli import cli

from .conftest import DATA, SAMPLES


def test_version():
    result = CliRunner().invoke(cli, ["--version"])
    assert result.exit_code == 0 and __version__ in result.output


def test_data_check_json_on_both_formats():
    for path, rows in [(SAMPLES / "train_sample.jsonl", 600), (DATA / "eval_sample.tsv", 40)]:
        result = CliRunner().invoke(cli, ["data", "check", str(path), "--json"])
        assert result.exit_code == 0, result.output
        report = json.loads(result.output)
        assert report["rows"] == rows and report["aligned"] == rows and report["coverage"] == 1.0
        assert report["max_pointer_index"] >= 0 and report["intents"]


def test_data_check_reports_unaligned_and_malformed_rows(tmp_path):
    path = tmp_path / "rows.jsonl"
    rows = [
        {"utterance": "call Ann", "logical_form": "[IN:CREATE_CALL [SL:CONTACT Ann ] ]"},
        {"utterance": "call Ann", "logical_form": "[IN:CREATE_CALL [SL:CONTACT Bob ] ]"},
        {"utterance": "call Ann", "logical_form": "[IN:CREATE_CALL"},
    ]
    path.write_text("\n".join(json.dumps(r) for r in rows))
    result = CliRunner().invoke(cli, ["data", "check", str(path)])
    assert result.exit_code == 0
    assert "3 rows (jsonl), 1 malformed" in result.output
    assert "aligned: 1 of 2 (coverage 0.5000)" in result.output
    assert f"{path}:2: slot SL:CONTACT 'Bob' is not a run" in result.output
    assert f"{path}:3: bad logical form" in result.output
    strict = CliRunner().invoke(cli, ["data", "check", str(path), "--strict"])
    assert strict.exit_code == 1
    expected = "bad logical form at character 15: unclosed intent 'IN:CREATE_CALL': expected '[SL:' or ']'"
    assert strict.output.strip() == f"Error: {path}:3: {expected}"
