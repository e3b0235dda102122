"""Faults the service survives: slow clients, too many connections, a worker killed under load."""

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

from .conftest import Server

FAST = {"utterance": "set an alarm for 7am"}


def _answered_quickly(url: str) -> float:
    started = time.monotonic()
    reply = httpx.post(url + "/v1/parse", json=FAST, timeout=10)
    assert reply.status_code == 200, reply.text
    return time.monotonic() - started


def _read_all(sock: socket.socket) -> bytes:
    data = b""
    while chunk := sock.recv(4096):
        data += chunk
    return data


@pytest.fixture(scope="module")
def strict_server(tiny_export):
    server = Server("--read-timeout", "1", "--max-connections", "6", model=tiny_export[0])
    yield server
    assert server.stop()


def test_headers_trickled_a_byte_a_second_are_cut_off(strict_server):
    request = b"POST /v1/parse HTTP/1.1\r\nHost: x\r\nContent-Length: 40\r\n\r\n"
    with socket.create_connection(("127.0.0.1", strict_server.port), timeout=10) as slow:
        started = time.monotonic()
        sent = 0
        try:
            for byte in request:
                slow.sendall(bytes([byte]))
                sent += 1
                if sent == 3:  # the slow client holds no batch slot and no worker
                    assert _answered_quickly(strict_server.url) < 5
                time.sleep(0.25)
        except OSError:
            pass  # the server closed the connection while we were still sending
        reply = _read_all(slow)
    assert reply.startswith(b"HTTP/1.1 408 ") and b"read_timeout" in reply
    assert 0.9 < time.monotonic() - started < 5  # the read timeout is 1 s
    assert sent < len(request)


def test_a_body_trickled_slowly_gets_408(strict_server):
    body = json.dumps(FAST).encode()
    head = b"POST /v1/parse HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n" % len(body)
    with socket.create_connection(("127.0.0.1", strict_server.port), timeout=10) as slow:
        slow.sendall(head)
        try:
            for byte in body[:8]:
                slow.sendall(bytes([byte]))
                time.sleep(0.3)
        except OSError:
            pass
        assert _answered_quickly(strict_server.url) < 5
        reply = _read_all(slow)
    assert reply.startswith(b"HTTP/1.1 408 ") and b"request body not received" in reply


def test_more_connections_than_allowed_get_503_with_retry_after(strict_server):
    held = [socket.create_connection(("127.0.0.1", strict_server.port), timeout=10) for _ in range(6)]
    try:
        time.sleep(0.2)
        with socket.create_connection(("127.0.0.1", strict_server.port), timeout=10) as extra:
            reply = _read_all(extra)
        assert reply.startswith(b"HTTP/1.1 503 ")
        assert b"retry-after: 1" in reply.lower() and b"too_many_connections" in reply
    finally:
        for sock in held:
            sock.close()
    time.sleep(0.3)
    assert httpx.get(strict_server.url + "/readyz", timeout=10).status_code == 200
    assert _answered_quickly(strict_server.url) < 5


def _workers(supervisor_pid: int) -> list[int]:
    """The supervisor's worker processes (not multiprocessing's resource tracker)."""
    pids = []
    for task in Path(f"/proc/{supervisor_pid}/task").iterdir():
        for child in (task / "children").read_text().split():
            command = Path(f"/proc/{child}/cmdline").read_bytes()
            if b"spawn_main" in command or b"mtop-edge-worker" in command:
                pids.append(int(child))
    return sorted(pids)


def _wait_for(predicate, seconds: float) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.2)
    return False


@pytest.mark.skipif(not Path("/proc/self/task").is_dir(), reason="finds the workers through /proc (Linux)")
def test_a_killed_worker_is_replaced_and_no_request_hangs(tiny_export):
    server = Server("--workers", "2", "--request-timeout", "10", model=tiny_export[0])
    try:
        assert _wait_for(lambda: len(_workers(server.process.pid)) == 2, 60)
        victim = _workers(server.process.pid)[0]
        outcomes: list[str] = []

        def ask(_):
            started = time.monotonic()
            try:
                status = httpx.post(server.url + "/v1/parse", json=FAST, timeout=15).status_code
                outcome = f"status {status}"
            except httpx.TransportError as exc:
                outcome = type(exc).__name__
            return outcome, time.monotonic() - started

        with ThreadPoolExecutor(8) as pool:
            futures = [pool.submit(ask, i) for i in range(200)]
            time.sleep(0.3)
            os.kill(victim, signal.SIGKILL)
            results = [f.result() for f in futures]
        outcomes = [outcome for outcome, _ in results]
        assert max(seconds for _, seconds in results) < 12  # nothing hangs past the request timeout
        assert set(outcomes) <= {"status 200", "status 503", "ConnectError", "ReadError", "RemoteProtocolError"}
        assert outcomes.count("status 200") > 100

        def replaced() -> bool:
            workers = _workers(server.process.pid)
            return len(workers) == 2 and victim not in workers

        assert _wait_for(replaced, 60)
        assert _wait_for(lambda: httpx.get(server.url + "/readyz", timeout=5).status_code == 200, 30)
        with ThreadPoolExecutor(4) as pool:
            after = list(pool.map(lambda _: httpx.post(server.url + "/v1/parse", json=FAST, timeout=15), range(40)))
        assert {reply.status_code for reply in after} == {200}
        metrics = httpx.get(server.url + "/metrics", timeout=10).text
        assert 'worker="0"' in metrics and 'worker="1"' in metrics  # every worker's counts, from any worker
    finally:
        assert server.stop()
