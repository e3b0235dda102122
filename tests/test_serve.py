"""`mtop-edge serve` as a real server on a free loopback port: answers, bad input, load, shutdown."""

from __future__ import annotations

import json
import os
import signal
import sys
import time
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest

from mtop_edge.runtime import Parser

from .conftest import SAMPLES, Server

UTTERANCES = [json.loads(line)["utterance"] for line in (SAMPLES / "eval_sample.jsonl").read_text().splitlines()]


def test_concurrent_clients_get_exactly_their_own_results(fp32_server, tiny_export_fp32):
    parser = Parser.load(tiny_export_fp32[0])
    utterances = UTTERANCES[:96]
    expected = {u: parser.parse(u).to_json() for u in utterances}

    def ask(index: int):
        if index % 3 == 0:  # a list request among single ones
            chunk = utterances[index : index + 3]
            reply = httpx.post(fp32_server.url + "/v1/parse", json={"utterances": chunk}, timeout=30)
            return chunk, reply
        reply = httpx.post(fp32_server.url + "/v1/parse", json={"utterance": utterances[index]}, timeout=30)
        return [utterances[index]], reply

    with ThreadPoolExecutor(16) as pool:
        answers = list(pool.map(ask, range(len(utterances))))
    for asked, reply in answers:
        assert reply.status_code == 200, reply.text
        body = reply.json()
        results = body.get("results", [body])
        assert body["model"] == parser.manifest.model_id
        for got, want in zip(results, [expected[u] for u in asked], strict=True):
            # the parse exactly; its probabilities to float precision (a batch's padding moves the last digits)
            assert _without_confidences(got) == _without_confidences(want)
            assert got["confidence"] == pytest.approx(want["confidence"], abs=2e-3)
    metrics = httpx.get(fp32_server.url + "/metrics").text
    count = _metric(metrics, "mtop_edge_batch_size_count")
    total = _metric(metrics, "mtop_edge_batch_size_sum")
    assert total > count  # some runtime batch held more than one request's utterances


def _without_confidences(record):
    if isinstance(record, dict):
        return {k: _without_confidences(v) for k, v in record.items() if "confidence" not in k and k != "model"}
    if isinstance(record, list):
        return [_without_confidences(v) for v in record]
    return record


def _metric(text: str, name: str) -> float:
    """The sum of a metric's series (every worker's, every label's)."""
    lines = [line for line in text.splitlines() if line.startswith((name + " ", name + "{"))]
    return sum(float(line.split()[-1]) for line in lines)


JSON = {"Content-Type": "application/json"}
POST, PARSE = "POST", "/v1/parse"
BAD = [  # (what, method, path, body, headers, status, code): the serve docs' bad-input table
    ("not JSON", POST, PARSE, b"{not json", JSON, 400, "invalid_json"),
    ("not UTF-8", POST, PARSE, b'{"utterance": "\xff\xfe"}', JSON, 400, "invalid_utf8"),
    ("a lone surrogate (no character)", POST, PARSE, b'{"utterance": "\\ud800 a"}', JSON, 422, "invalid_utterance"),
    ("not an object", POST, PARSE, b"[1, 2]", JSON, 422, "invalid_request"),
    ("no utterance", POST, PARSE, b"{}", JSON, 422, "invalid_request"),
    ("wrong type", POST, PARSE, b'{"utterance": 7}', JSON, 422, "invalid_request"),
    ("both forms", POST, PARSE, b'{"utterance": "a", "utterances": ["b"]}', JSON, 422, "invalid_request"),
    ("unknown field", POST, PARSE, b'{"utterance": "a", "speed": 2}', JSON, 422, "invalid_request"),
    ("truncate not a boolean", POST, PARSE, b'{"utterance": "a", "truncate": "yes"}', JSON, 422, "invalid_request"),
    ("empty utterance", POST, PARSE, b'{"utterance": ""}', JSON, 422, "empty_utterance"),
    ("only whitespace", POST, PARSE, b'{"utterance": "   "}', JSON, 422, "empty_utterance"),
    ("empty list", POST, PARSE, b'{"utterances": []}', JSON, 422, "invalid_request"),
    ("a list item not a string", POST, PARSE, b'{"utterances": ["call mom", 3]}', JSON, 422, "invalid_request"),
    (
        "too many rows (9, limit 8)",
        POST,
        PARSE,
        b'{"utterances": [%s]}' % b",".join([b'"a"'] * 9),
        JSON,
        422,
        "too_many_items",
    ),
    ("too many words (300)", POST, PARSE, b'{"utterance": "%s"}' % (b"word " * 300), JSON, 422, "invalid_utterance"),
    ("body over the limit", POST, PARSE, b'{"utterance": "%s"}' % (b"x" * 5000), JSON, 413, "body_too_large"),
    ("wrong method", "GET", "/v1/parse", b"", {}, 405, "method_not_allowed"),
    ("wrong method on a GET route", "DELETE", "/v1/model", b"", {}, 405, "method_not_allowed"),
    ("unknown path", "GET", "/v2/parse", b"", {}, 404, "not_found"),
]


@pytest.mark.parametrize(("what", "method", "path", "body", "headers", "status", "code"), BAD)
def test_bad_input_gets_its_status_and_a_json_error(fp32_server, what, method, path, body, headers, status, code):
    reply = httpx.request(method, fp32_server.url + path, content=body, headers=headers, timeout=30)
    assert reply.status_code == status, reply.text
    error = reply.json()["error"]
    assert error["status"] == status and error["code"] == code and error["message"]


def test_bad_items_in_a_list_are_reported_per_item(fp32_server):
    reply = httpx.post(fp32_server.url + "/v1/parse", json={"utterances": ["call mom", " ", "word " * 300]})
    assert reply.status_code == 200
    first, empty, long = reply.json()["results"]
    assert first["logical_form"] and "error" not in first
    assert "empty utterance" in empty["error"] and "words" in long["error"]
    truncated = httpx.post(fp32_server.url + "/v1/parse", json={"utterance": "call mom " * 100, "truncate": True})
    assert truncated.status_code == 200 and truncated.json()["truncated"] is True


def test_model_health_and_schema_routes(fp32_server, tiny_export_fp32):
    model = httpx.get(fp32_server.url + "/v1/model").json()
    assert model["id"] == Parser.load(tiny_export_fp32[0]).manifest.model_id and model["quantization"] == "none"
    assert httpx.get(fp32_server.url + "/healthz").json() == {"status": "ok"}
    schema = httpx.get(fp32_server.url + "/openapi.json").json()
    assert "/v1/parse" in schema["paths"] and schema["openapi"].startswith("3.")


def test_soak_of_mixed_requests_ends_healthy(fp32_server):
    bodies = []
    for i in range(2000):
        if i % 10 == 9:  # 10% malformed, of several kinds
            bodies.append([b"{oops", b'{"utterance": ""}', b'{"utterances": 5}', b"\xff"][i % 4])
        else:
            bodies.append(json.dumps({"utterance": UTTERANCES[i % len(UTTERANCES)]}).encode())
    rss_before = fp32_server.rss_kb()
    with httpx.Client(timeout=30) as client, ThreadPoolExecutor(8) as pool:
        statuses = list(pool.map(lambda b: client.post(fp32_server.url + "/v1/parse", content=b).status_code, bodies))
    good = [s for i, s in enumerate(statuses) if i % 10 != 9]
    bad = [s for i, s in enumerate(statuses) if i % 10 == 9]
    assert set(good) == {200}
    assert all(400 <= s < 500 for s in bad)
    assert httpx.get(fp32_server.url + "/healthz").status_code == 200
    assert fp32_server.rss_kb() < rss_before * 1.25


def test_full_queue_answers_503_with_retry_after(tiny_export_fp32):
    server = Server("--max-queue", "2", "--max-wait-ms", "200", model=tiny_export_fp32[0])
    try:
        with ThreadPoolExecutor(12) as pool:
            replies = list(
                pool.map(
                    lambda u: httpx.post(server.url + "/v1/parse", json={"utterance": u}, timeout=30), UTTERANCES[:12]
                )
            )
        statuses = [r.status_code for r in replies]
        assert 200 in statuses and 503 in statuses and set(statuses) <= {200, 503}
        busy = next(r for r in replies if r.status_code == 503)
        assert busy.headers["retry-after"] == "1" and busy.json()["error"]["code"] == "queue_full"
    finally:
        assert server.stop()


def test_sigterm_finishes_accepted_requests_then_exits(tiny_export_fp32):
    server = Server("--max-wait-ms", "500", model=tiny_export_fp32[0])
    with ThreadPoolExecutor(6) as pool:
        futures = [
            pool.submit(httpx.post, server.url + "/v1/parse", json={"utterance": u}, timeout=30) for u in UTTERANCES[:6]
        ]
        time.sleep(0.25)  # accepted and waiting for their batch to fill
        server.process.send_signal(signal.SIGTERM)
        replies = [f.result() for f in futures]
    assert [r.status_code for r in replies] == [200] * 6
    assert server.stop()


def test_several_workers_serve_the_default_model():
    server = Server("--workers", "2")
    try:
        reply = httpx.post(server.url + "/v1/parse", json={"utterance": "set an alarm"}, timeout=30)
        assert reply.status_code == 200 and reply.json()["intent"] == "IN:CREATE_ALARM"
        # without --threads, the workers split the cores instead of each sizing its pool to all of them
        threads = httpx.get(server.url + "/v1/model", timeout=30).json()["threads"]
        assert threads == max(1, (os.cpu_count() or 1) // 2)
    finally:
        assert server.stop()


def test_serve_without_the_extra_is_a_clear_error(monkeypatch):
    from click.testing import CliRunner

    from mtop_edge.cli import cli

    monkeypatch.setitem(sys.modules, "uvicorn", None)
    result = CliRunner().invoke(cli, ["serve"])
    assert result.exit_code != 0 and "serve" in result.output and "Traceback" not in result.output
    assert os.environ.get("MTOP_EDGE_SERVE_SETTINGS") is None
