"""The service on a local Ray cluster: Ray Serve keeps the native HTTP contract, and a replica
killed mid-run loses no request."""

from __future__ import annotations

import json
import os
import signal
import socket
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest

pytest.importorskip("ray")

from mtop_edge.runtime import Parser
from mtop_edge.serve.settings import ServeSettings

from .conftest import SAMPLES, Server, free_port, process_commands, ray_worker_pids
from .test_serve import BAD, _without_confidences

UTTERANCES = [json.loads(line)["utterance"] for line in (SAMPLES / "eval_sample.jsonl").read_text().splitlines()]


@pytest.fixture(scope="module")
def ray_server(ray_cluster, tiny_export_fp32):
    from ray import serve

    from mtop_edge.serve.ray import DEPLOYMENT, deployment

    port = free_port()
    serve.start(http_options={"host": "127.0.0.1", "port": port})
    settings = ServeSettings(model=str(tiny_export_fp32[0]), threads=1, max_items=8, max_body_bytes=4096)
    serve.run(deployment(settings, replicas=2), name=DEPLOYMENT, route_prefix="/")
    assert _haproxy_on(port), "the requests must pass the ingress `serve --ray` uses by default"
    yield f"http://127.0.0.1:{port}"
    serve.delete(DEPLOYMENT)


def _haproxy_on(port: int) -> bool:
    """Whether an HAProxy listens on ``port`` (Ray writes the port into the config file it runs)."""
    for command in process_commands().values():
        if command[0].endswith(b"/haproxy") and b"-f" in command:
            config = Path(command[command.index(b"-f") + 1].decode())
            if config.is_file() and f"bind 127.0.0.1:{port}" in config.read_text():
                return True
    return False


def _replica_pids() -> list[int]:
    return ray_worker_pids("ServeReplica:mtop-edge")


def test_ray_serve_answers_as_the_in_process_parser(ray_server, tiny_export_fp32):
    parser = Parser.load(tiny_export_fp32[0])
    utterances = UTTERANCES[:200]
    with ThreadPoolExecutor(8) as pool:
        replies = list(
            pool.map(lambda u: httpx.post(ray_server + "/v1/parse", json={"utterance": u}, timeout=60), utterances)
        )
    for utterance, reply in zip(utterances, replies, strict=True):
        assert reply.status_code == 200, reply.text
        assert _without_confidences(reply.json()) == _without_confidences(parser.parse(utterance).to_json())
    batch = httpx.post(ray_server + "/v1/parse", json={"utterances": utterances[:8]}, timeout=60).json()
    assert [r["logical_form"] for r in batch["results"]] == [parser.parse(u).logical_form for u in utterances[:8]]
    assert httpx.get(ray_server + "/openapi.json").json()["paths"].keys() >= {"/v1/parse", "/v1/model", "/readyz"}


def test_ray_serve_gives_the_native_servers_error_bodies(ray_server, fp32_server):
    for what, method, path, body, headers, status, code in BAD:
        native = httpx.request(method, fp32_server.url + path, content=body, headers=headers, timeout=60)
        on_ray = httpx.request(method, ray_server + path, content=body, headers=headers, timeout=60)
        assert (on_ray.status_code, on_ray.json()) == (native.status_code, native.json()), what
        assert on_ray.status_code == status and on_ray.json()["error"]["code"] == code


def test_a_killed_replica_loses_no_request(ray_server):
    victim = _replica_pids()[0]

    def ask(index: int):
        try:
            reply = httpx.post(ray_server + "/v1/parse", json={"utterance": UTTERANCES[index % 300]}, timeout=60)
            return reply.status_code
        except httpx.TransportError as exc:
            return type(exc).__name__

    with ThreadPoolExecutor(8) as pool:
        futures = [pool.submit(ask, i) for i in range(160)]
        time.sleep(0.5)
        os.kill(victim, signal.SIGKILL)
        outcomes = [f.result() for f in futures]
    assert len(outcomes) == 160  # every request answered or reported
    assert outcomes.count(200) >= 100 and all(o == 200 or o in (500, 502, 503) or isinstance(o, str) for o in outcomes)
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline and (len(_replica_pids()) < 2 or victim in _replica_pids()):
        time.sleep(1)
    assert len(_replica_pids()) == 2 and victim not in _replica_pids()  # Ray started a new replica
    assert httpx.post(ray_server + "/v1/parse", json={"utterance": "call mom"}, timeout=60).status_code == 200


def test_serve_run_arguments_are_typed_and_checked():
    from mtop_edge.config import ConfigError
    from mtop_edge.config import field_types as types
    from mtop_edge.serve.ray import _typed, app

    fields = types(ServeSettings)
    assert _typed("16", fields["max_batch"]) == 16 and _typed("2", fields["threads"]) == 2
    assert _typed("0.5", fields["min_confidence"]) == 0.5 and _typed("yes", fields["access_log"]) is True
    assert _typed(3, fields["max_batch"]) == 3  # a YAML value keeps its type
    app({"model": "/srv/model", "max_batch": "16", "min_confidence": 1, "replicas": "2"})
    with pytest.raises(ConfigError, match="max_batch must be int"):
        app({"max_batch": "many"})
    with pytest.raises(ConfigError, match="unknown field"):
        app({"modle": "/srv/model"})


def test_ray_serve_logs_requests_only_when_the_native_server_would():
    """Ray Serve's access log follows --access-log (off by default, as the native server's), on the
    deployment (replicas) and in what `serve.start` gets (the proxy)."""
    from mtop_edge.serve.ray import deployment, logging_config

    assert logging_config(ServeSettings()) == {"enable_access_log": False, "log_level": "WARNING"}
    assert logging_config(ServeSettings(access_log=True))["enable_access_log"] is True
    options = deployment(ServeSettings(), replicas=2)._bound_deployment._deployment_config.logging_config
    assert options["enable_access_log"] is False


def test_serve_ray_through_the_python_proxy(tiny_export_fp32, fp32_server):
    """`serve --ray --ingress proxy`: its own local cluster, Ray's Python proxy in front, the same answers."""
    server = Server(
        "--ray", "--ingress", "proxy", "--max-items", "8", "--max-body-bytes", "4096", model=tiny_export_fp32[0]
    )
    try:
        assert not _haproxy_on(server.port)
        parser = Parser.load(tiny_export_fp32[0])
        for utterance in UTTERANCES[:20]:
            reply = httpx.post(server.url + "/v1/parse", json={"utterance": utterance}, timeout=60)
            assert _without_confidences(reply.json()) == _without_confidences(parser.parse(utterance).to_json())
        for what, method, path, body, headers, _status, _code in BAD[:4]:
            native = httpx.request(method, fp32_server.url + path, content=body, headers=headers, timeout=60)
            on_ray = httpx.request(method, server.url + path, content=body, headers=headers, timeout=60)
            assert (on_ray.status_code, on_ray.json()) == (native.status_code, native.json()), what
    finally:
        assert server.stop()


def test_the_ingress_sets_what_ray_reads_and_a_busy_haproxy_port_is_one_line(tmp_path):
    from click.testing import CliRunner

    from mtop_edge.choices import RayIngress
    from mtop_edge.cli import cli
    from mtop_edge.serve.ray_ingress import busy_ingress_ports, ingress_environment

    assert ingress_environment(RayIngress.PROXY) == {
        "RAY_SERVE_ENABLE_HA_PROXY": "0",
        "RAY_SERVE_ENABLE_DIRECT_INGRESS": "0",
    }
    haproxy = ingress_environment(RayIngress.HAPROXY, {"RAY_SERVE_HAPROXY_NBTHREAD": "3"})
    assert haproxy["RAY_SERVE_ENABLE_HA_PROXY"] == "1" and haproxy["RAY_SERVE_HAPROXY_NBTHREAD"] == "3"
    with socket.socket() as held:
        held.bind(("0.0.0.0", 0))
        port = held.getsockname()[1]
        environ = {"RAY_SERVE_HAPROXY_STATS_PORT": str(port), "RAY_SERVE_HAPROXY_METRICS_PORT": str(free_port())}
        assert busy_ingress_ports(RayIngress.HAPROXY, environ) == [f"RAY_SERVE_HAPROXY_STATS_PORT={port}"]
        assert busy_ingress_ports(RayIngress.PROXY, environ) == []
        result = CliRunner().invoke(cli, ["serve", "--ray"], env=environ)
    assert result.exit_code == 1 and "Traceback" not in result.output
    assert result.output.count("\n") == 1 and f"RAY_SERVE_HAPROXY_STATS_PORT={port}" in result.output
