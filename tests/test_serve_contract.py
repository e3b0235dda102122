"""The HTTP contract: the OpenAPI document describes every answer (checked by Schemathesis against the
app in-process), oversized bodies reach every client as 413, and the bad-input table in the serve
docs is what the service answers."""

from __future__ import annotations

import json
import os
import re
import socket
import urllib.error
import urllib.request
from pathlib import Path

import pytest

schemathesis = pytest.importorskip("schemathesis")
from hypothesis import HealthCheck, settings  # noqa: E402

from mtop_edge.runtime import Parser  # noqa: E402
from mtop_edge.serve.app import create_app  # noqa: E402
from mtop_edge.serve.settings import ServeSettings  # noqa: E402
from tests.test_serve import BAD  # noqa: E402

DOCS = Path(__file__).resolve().parents[1] / "docs" / "serve.md"
LIMITS = ServeSettings(max_items=8, max_body_bytes=4096)


@pytest.fixture(scope="module")
def api_schema(tiny_export_fp32):
    app = create_app(Parser.load(tiny_export_fp32[0]), LIMITS)
    schema = schemathesis.openapi.from_asgi("/openapi.json", app)
    # a schema-violating body over the size limit is refused with 413 before it is read (documented):
    # a rejection, which the check's default list of rejecting statuses does not name
    rejection = schema.config.checks.negative_data_rejection
    rejection.expected_statuses = [*rejection.expected_statuses, "413"]
    return schema


# Every check runs (call_and_validate's default set: not_a_server_error, status_code_conformance,
# content_type_conformance, response_headers_conformance, response_schema_conformance,
# negative_data_rejection, positive_data_acceptance, unsupported_method, ...); none is turned off.
# Positive and negative data over every operation, seeded and bounded so that a failure replays
# and CI pays well under a minute. (Driven through Hypothesis directly: schemathesis's lazy pytest
# fixture does not run under pytest 9.)
@pytest.mark.parametrize("mode", ["positive", "negative"])
def test_the_service_keeps_its_openapi_contract(api_schema, mode):
    from hypothesis import given
    from schemathesis import GenerationMode

    @given(api_schema.as_strategy(generation_mode=GenerationMode(mode)))
    @settings(
        max_examples=150,
        derandomize=True,
        database=None,
        deadline=None,
        suppress_health_check=list(HealthCheck),
    )
    def check(case):
        case.call_and_validate()

    check()


def test_a_6_mb_body_reaches_urllib_as_413(fp32_server):
    body = json.dumps({"utterance": "x" * (6 << 20)}).encode()
    headers = {"Content-Type": "application/json"}
    request = urllib.request.Request(fp32_server.url + "/v1/parse", data=body, headers=headers)
    with pytest.raises(urllib.error.HTTPError) as caught:  # urllib sends the whole body, then reads
        urllib.request.urlopen(request, timeout=30)
    assert caught.value.code == 413
    assert json.loads(caught.value.read())["error"]["code"] == "body_too_large"
    assert caught.value.headers["x-request-id"]


def test_an_announced_oversized_body_is_refused_before_it_is_sent(fp32_server):
    with socket.create_connection(("127.0.0.1", fp32_server.port), timeout=10) as sock:
        sock.sendall(b"POST /v1/parse HTTP/1.1\r\nHost: x\r\nContent-Length: 10000000\r\n\r\n")
        reply = b""
        while b"body_too_large" not in reply:  # no byte of the body sent: the answer comes anyway
            chunk = sock.recv(4096)
            if not chunk:
                break
            reply += chunk
    assert reply.startswith(b"HTTP/1.1 413 ") and b"body_too_large" in reply


def test_405_names_the_allowed_methods(fp32_server):
    import httpx

    reply = httpx.delete(fp32_server.url + "/v1/parse")
    assert reply.status_code == 405 and reply.headers["allow"] == "POST"
    assert httpx.post(fp32_server.url + "/healthz").headers["allow"] == "GET, HEAD"  # sorted, the same every run


def bad_input_table(server) -> str:
    """The serve docs' table, from what the service answers to each malformed request."""
    import httpx

    rows = ["| request | status | body |", "|---|---|---|"]
    for description, method, path, body, headers, _, _ in BAD:
        reply = httpx.request(method, server.url + path, content=body, headers=headers, timeout=30)
        text = json.dumps(reply.json(), ensure_ascii=False).replace("|", "\\|")
        rows.append(f"| {description} | {reply.status_code} | `{text}` |")
    return "\n".join(rows)


def test_the_bad_input_table_in_the_docs_is_what_the_service_answers(fp32_server):
    table = bad_input_table(fp32_server)
    block = re.compile(r"(<!-- bad-input -->\n)(.*?)(\n?<!-- /bad-input -->)", re.S)
    if os.environ.get("MTOP_EDGE_UPDATE_DOCS"):  # MTOP_EDGE_UPDATE_DOCS=1 pytest -k bad_input rewrites the block
        DOCS.write_text(block.sub(lambda m: m.group(1) + table + "\n" + m.group(3).lstrip("\n"), DOCS.read_text()))
    documented = block.search(DOCS.read_text())
    assert documented is not None, f"{DOCS} lacks the bad-input block"
    assert documented.group(2).strip() == table, "the service answers otherwise: MTOP_EDGE_UPDATE_DOCS=1 rewrites it"
