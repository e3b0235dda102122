"""`mtop-edge serve` as a real server on a free loopback port: answers, bad input, load, shutdown."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest

from mtop_edge.runtime import Parser

from .conftest import SAMPLES

UTTERANCES = [json.loads(line)["utterance"] for line in (SAMPLES / "eval_sample.jsonl").read_text().splitlines()]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    """`mtop-edge serve` in a subprocess; stopped with SIGTERM."""

    def __init__(self, *args: str, model: Path | None = None) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        command = [sys.executable, "-m", "mtop_edge", "serve", "--port", str(self.port), "--threads", "1", *args]
        if model is not None:
            command += ["--model", str(model)]
        self.process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        deadline = time.time() + 60
        while time.time() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"server exited: {self.process.stdout.read()}")
            try:
                if httpx.get(self.url + "/readyz", timeout=1).status_code == 200:
                    return
            except httpx.HTTPError:
                time.sleep(0.1)
        raise RuntimeError("server did not become ready")

    def stop(self) -> bool:
        """SIGTERM; True when the server shut down by itself (uvicorn re-raises the signal after a
        graceful shutdown, so the exit status is -SIGTERM) and printed no traceback."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        code = self.process.wait(timeout=60)
        return code in (0, -signal.SIGTERM) and "Traceback" not in self.process.stdout.read()

    def rss_kb(self) -> int:
        for line in Path(f"/proc/{self.process.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
        return 0


@pytest.fixture(scope="module")
def fp32_server(tiny_export_fp32):
    # fp32: results do not depend on which requests share a batch (int8's dynamic activation scales do)
    server = Server("--max-wait-ms", "20", "--max-items", "8", "--max-body-bytes", "4096", model=tiny_export_fp32[0])
    yield server
    assert server.stop()


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
        assert [{k: v for k, v in r.items() if k != "model"} for r in results] == [expected[u] for u in asked]
    metrics = httpx.get(fp32_server.url + "/metrics").text
    count = _metric(metrics, "mtop_edge_batch_size_count")
    total = _metric(metrics, "mtop_edge_batch_size_sum")
    assert total > count  # some runtime batch held more than one request's utterances


def _metric(text: str, name: str) -> float:
    return next(float(line.split()[-1]) for line in text.splitlines() if line.startswith(name + " "))


BAD = [
    ("POST", "/v1/parse", b"{not json", 400, "invalid_json"),
    ("POST", "/v1/parse", b'{"utterance": "\xff\xfe"}', 400, "invalid_utf8"),
    ("POST", "/v1/parse", b"[1, 2]", 422, "invalid_request"),
    ("POST", "/v1/parse", b"{}", 422, "invalid_request"),
    ("POST", "/v1/parse", b'{"utterance": 7}', 422, "invalid_request"),
    ("POST", "/v1/parse", b'{"utterance": "a", "utterances": ["b"]}', 422, "invalid_request"),
    ("POST", "/v1/parse", b'{"utterance": "a", "speed": 2}', 422, "invalid_request"),
    ("POST", "/v1/parse", b'{"utterance": "call mom", "truncate": "yes"}', 422, "invalid_request"),
    ("POST", "/v1/parse", b'{"utterance": "   "}', 422, "empty_utterance"),
    ("POST", "/v1/parse", b'{"utterances": []}', 422, "invalid_request"),
    ("POST", "/v1/parse", b'{"utterances": ["call mom", 3]}', 422, "invalid_request"),
    ("POST", "/v1/parse", json.dumps({"utterances": ["call mom"] * 9}).encode(), 422, "too_many_items"),
    ("POST", "/v1/parse", json.dumps({"utterance": "word " * 300}).encode(), 422, "invalid_utterance"),
    ("POST", "/v1/parse", json.dumps({"utterance": "x" * 5000}).encode(), 413, "body_too_large"),
    ("GET", "/v1/parse", b"", 405, "method_not_allowed"),
    ("GET", "/v2/parse", b"", 404, "not_found"),
    ("DELETE", "/v1/model", b"", 405, "method_not_allowed"),
]


@pytest.mark.parametrize(("method", "path", "body", "status", "code"), BAD)
def test_bad_input_gets_its_status_and_a_json_error(fp32_server, method, path, body, status, code):
    reply = httpx.request(method, fp32_server.url + path, content=body, timeout=30)
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
