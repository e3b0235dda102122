"""`mtop-edge parse` and `evaluate --engine onnx` from the command line: outputs, errors, streams, threads."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from mtop_edge.cli import cli
from mtop_edge.errors import InputError
from mtop_edge.runtime import Parser

from .conftest import SAMPLES
from .conftest import parse_command as run

ROOT = Path(__file__).resolve().parents[1]
EVAL_ROWS = [json.loads(line) for line in (SAMPLES / "eval_sample.jsonl").read_text().splitlines()]


def test_parse_never_imports_torch_or_transformers(tiny_export):
    code = (
        "import sys\n"
        "from click.testing import CliRunner\n"
        "import mtop_edge\n"
        "from mtop_edge.cli import cli\n"
        f"r = CliRunner().invoke(cli, ['parse', '--model', {str(tiny_export[0])!r}, 'set an alarm'])\n"
        "assert r.exit_code == 0, r.output\n"
        "p = mtop_edge.Parser.load(" + repr(str(tiny_export[0])) + ")\n"
        "p.parse_batch(['call mom', 'weather today'])\n"
        "heavy = sorted(m for m in sys.modules if m.split('.')[0] in ('torch', 'transformers', 'optimum'))\n"
        "print(heavy)\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, check=False)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"


def test_parse_prints_the_logical_form_and_json(tiny_export):
    model = str(tiny_export[0])
    plain = run("--model", model, "set an alarm for 7am")
    assert plain.exit_code == 0 and plain.output.startswith("[IN:")
    record = json.loads(run("--model", model, "--json", "set an alarm for 7am").output)
    assert record["utterance"] == "set an alarm for 7am" and record["logical_form"] == plain.output.strip()


@pytest.mark.parametrize("utterance", ["", "   ", "\t"])
def test_empty_utterance_is_a_one_line_error_with_exit_code_2(tiny_export, utterance):
    result = run("--model", str(tiny_export[0]), utterance)
    assert result.exit_code == 2
    assert result.output.strip() == "Error: empty utterance: nothing to parse"
    with pytest.raises(InputError):
        Parser.load(tiny_export[0]).parse(utterance)


def test_too_many_words_is_an_error_unless_truncated(tiny_export):
    model = str(tiny_export[0])
    limit = Parser.load(model).spec.vocab.max_pointers
    long = " ".join(["alarm"] * (limit + 5))
    result = run("--model", model, long)
    assert result.exit_code == 2
    assert f"has {limit + 5} words but the model can point to at most {limit}" in result.output
    flagged = json.loads(run("--model", model, "--json", "--truncate", long).output)
    assert flagged["truncated"] is True


def test_stream_parses_good_lines_and_reports_bad_ones(tiny_export):
    data = b"set an alarm\n\n\xff\xfebad bytes\ncall mom\r\n   \nweather in Paris"
    result = CliRunner().invoke(cli, ["parse", "--model", str(tiny_export[0]), "-", "--batch-size", "2"], input=data)
    assert result.exit_code == 1
    records = [json.loads(line) for line in result.stdout.splitlines()]
    assert [r["line"] for r in records] == [1, 2, 3, 4, 5, 6]
    assert [("error" in r) for r in records] == [False, True, True, False, True, False]
    assert "invalid UTF-8" in records[2]["error"]
    assert records[3]["utterance"] == "call mom" and records[3]["logical_form"].startswith("[IN:")
    assert "3 line(s) could not be parsed" in result.stderr


def test_input_file_streams_json_lines(tiny_export, tmp_path):
    path = tmp_path / "in.txt"
    path.write_text("set an alarm\ncall mom\n")
    result = run("--model", str(tiny_export[0]), "--input", str(path))
    assert result.exit_code == 0
    assert [json.loads(line)["utterance"] for line in result.output.splitlines()] == ["set an alarm", "call mom"]


def test_usage_errors():
    assert run().exit_code == 2
    assert "give one UTTERANCE" in run().output


def test_evaluate_onnx_engine_reports_constrained_and_not(tiny_export):
    args = [
        "evaluate",
        "--engine",
        "onnx",
        "--model",
        str(tiny_export[0]),
        "--data",
        str(SAMPLES / "eval_sample.jsonl"),
        "--limit",
        "60",
        "--json",
    ]
    constrained = json.loads(CliRunner().invoke(cli, args).output)
    free = json.loads(CliRunner().invoke(cli, [*args, "--constraints", "none"]).output)
    legacy = json.loads(CliRunner().invoke(cli, [*args, "--no-constrain"]).output)  # the older flag still works
    assert constrained["engine"] == "onnx" and constrained["constraints"] == "pairs" and constrained["n"] == 60
    assert constrained["well_formed"] == 1.0
    assert free["constraints"] == "none" and free["well_formed"] < 1.0
    assert legacy["constraints"] == "none" and legacy["exact_match"] == free["exact_match"]


def test_one_shared_thread_pool_per_process(tiny_export):
    # in a process of its own: onnxruntime's global pool can be sized once, and then serves every session
    code = (
        "import sys\n"
        "from mtop_edge.runtime import Parser, share_thread_pool\n"
        "pool = share_thread_pool(2)\n"
        "assert pool.created and pool.threads == 2 and not share_thread_pool(1).created\n"
        f"parser = Parser.load({str(tiny_export[0])!r}, threads=2, pool=pool)\n"
        "print(parser.parse('set an alarm for 7am').ok)\n"
    )
    result = subprocess.run([sys.executable, "-c", code], check=False, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "True"
    # the console command shares its pool; its answer is the in-process one
    command = [sys.executable, "-m", "mtop_edge", "parse", "--model", str(tiny_export[0]), "--threads", "2"]
    shared = subprocess.run(
        [*command, "set an alarm for 7am"], check=False, capture_output=True, text=True, timeout=120
    )
    assert shared.returncode == 0, shared.stderr
    assert shared.stdout.strip() == Parser.load(tiny_export[0]).parse("set an alarm for 7am").logical_form
