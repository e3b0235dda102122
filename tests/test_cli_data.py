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


def test_junk_rows_are_skipped_wherever_they_are_and_junk_alone_fails(tmp_path):
    good = json.dumps({"utterance": "call Ann", "logical_form": "[IN:CREATE_CALL [SL:CONTACT Ann ] ]"})
    first_junk = tmp_path / "first.jsonl"
    first_junk.write_bytes(b"\x00\x01junk\n" + good.encode() + b"\n")
    later_junk = tmp_path / "later.jsonl"
    later_junk.write_bytes(good.encode() + b"\n\x00\x01junk\n")
    for path, line in ((first_junk, 1), (later_junk, 2)):  # the same line is skipped the same way
        result = CliRunner().invoke(cli, ["data", "check", str(path), "--json"])
        assert result.exit_code == 0, result.output
        report = json.loads(result.output)
        assert report["rows"] == 2 and report["malformed"] == 1 and report["format"] == "jsonl"
        assert report["first_malformed"][0]["line"] == line
    only_junk = tmp_path / "junk.bin"
    only_junk.write_bytes(b"\x89PNG\x00\x01\x02")
    result = CliRunner().invoke(cli, ["data", "check", str(only_junk)])
    assert result.exit_code == 1 and "no well-formed rows (1 malformed" in result.output
    assert CliRunner().invoke(cli, ["data", "check", str(first_junk), "--show", "-1"]).exit_code == 2


def test_evaluate_names_malformed_rows_and_limit_counts_rows_read(tmp_path, tiny_export):
    rows = (SAMPLES / "eval_sample.jsonl").read_text().splitlines()[:6]
    path = tmp_path / "eval.jsonl"
    path.write_text("\n".join([rows[0], '{"utterance": "x", "logical_form": "[IN:A"}', *rows[1:]]) + "\n")
    args = ["evaluate", "--engine", "onnx", "--model", str(tiny_export[0]), "--data", str(path), "--json"]
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 0
    assert f"skipped {path}:2: bad logical form" in result.stderr
    report = json.loads(result.stdout)
    assert report["n"] == 6 and report["malformed_rows"] == 1
    limited = json.loads(CliRunner().invoke(cli, [*args, "--limit", "3"]).stdout)
    assert limited["n"] == 2 and limited["malformed_rows"] == 1  # three rows read: two good, one malformed
    strict = CliRunner().invoke(cli, [*args, "--strict"])
    assert strict.exit_code == 1 and f"{path}:2: bad logical form" in strict.output
