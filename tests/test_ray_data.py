"""Corpora on a local Ray cluster: Ray Data parses every line, in order, as ``parse --input`` does,
and an actor killed mid-run loses and doubles nothing."""

from __future__ import annotations

import json
import os
import signal
import time

import pytest

pytest.importorskip("ray")

from click.testing import CliRunner

from mtop_edge.cli import cli

from .conftest import SAMPLES, ray_worker_pids

LINES = 20000
UTTERANCES = [json.loads(line)["utterance"] for line in (SAMPLES / "eval_sample.jsonl").read_text().splitlines()]


def _corpus(path, lines: int, bad_every: int) -> list[str]:
    """A text corpus with a bad line (invalid UTF-8, or empty) every ``bad_every`` lines."""
    written = []
    with path.open("wb") as handle:
        for i in range(lines):
            if i % bad_every == bad_every - 1:
                line = b"\xff\xfe broken" if (i // bad_every) % 2 else b"   "
            else:
                line = UTTERANCES[i % len(UTTERANCES)].encode()
            handle.write(line + b"\n")
            written.append(line.decode("utf-8", "replace"))
    return written


def _records(directory) -> list[dict]:
    return [json.loads(line) for f in sorted(directory.iterdir()) for line in f.read_text().splitlines()]


def test_ray_data_parses_every_line_in_order_as_parse_does(ray_cluster, tiny_export_fp32, tmp_path):
    from mtop_edge.corpus import CorpusOptions, parse_corpus

    source = tmp_path / "corpus.txt"
    _corpus(source, 2000, 100)
    options = CorpusOptions(model=str(tiny_export_fp32[0]))
    summary = parse_corpus(source, tmp_path / "out", options, actors=1, log=lambda _: None)
    records = _records(tmp_path / "out")
    assert summary["rows"] == len(records) == 2000 and summary["failed"] == 20
    assert [r["line"] for r in records] == list(range(1, 2001))  # input order
    assert sum("error" in r for r in records) == 20
    # fp32: int8 activations are quantized per call, so an int8 model's parse may depend on its batch mates
    streamed = CliRunner().invoke(cli, ["parse", "--model", str(tiny_export_fp32[0]), "--input", str(source)])
    expected = [json.loads(line) for line in streamed.output.splitlines() if line.startswith("{")]
    assert len(expected) == 2000
    for got, want in zip(records, expected, strict=True):
        assert got["line"] == want["line"]
        assert got.get("logical_form") == want.get("logical_form") and ("error" in got) == ("error" in want)


def test_ray_data_survives_a_killed_actor(ray_cluster, tiny_export_fp32, tmp_path):
    import threading

    from mtop_edge.corpus import CorpusOptions, parse_corpus

    source = tmp_path / "corpus.txt"
    _corpus(source, LINES, 500)  # enough lines that the job outlives the first kill
    killed = []

    def kill_one():
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and not killed:
            workers = ray_worker_pids("ParseActor")
            if workers:
                time.sleep(0.3)  # let it take a batch or two first
                try:
                    os.kill(workers[0], signal.SIGKILL)
                except ProcessLookupError:  # gone already: look again
                    continue
                killed.append(workers[0])
            time.sleep(0.1)

    killer = threading.Thread(target=kill_one)
    killer.start()
    options = CorpusOptions(model=str(tiny_export_fp32[0]))
    summary = parse_corpus(source, tmp_path / "out", options, actors=2, log=lambda _: None)
    killer.join()
    records = _records(tmp_path / "out")
    assert killed, "no actor was found to kill"
    assert summary["rows"] == len(records) == LINES  # none lost, none doubled
    assert [r["line"] for r in records] == list(range(1, LINES + 1))
