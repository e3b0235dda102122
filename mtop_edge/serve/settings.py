"""What `mtop-edge serve` is configured with: one object, handed to every worker as an argument."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class ServeSettings:
    """The service's settings; the defaults are the CLI's."""

    model: str | None = None
    device: str = "cpu"
    threads: int | None = None
    host: str = "127.0.0.1"
    port: int = 8080
    workers: int = 1
    max_batch: int = 32
    max_wait_ms: float = 0.0
    max_queue: int = 1024
    max_items: int = 256
    max_body_bytes: int = 1 << 20
    # an oversized body is answered at once and then read and thrown away, up to this many bytes or
    # seconds, so that clients which send the whole body before reading (urllib, requests) get the 413
    drain_body_bytes: int = 64 << 20
    drain_body_seconds: float = 10.0
    read_timeout: float = 10.0  # the request's headers, and its body, must arrive within this
    request_timeout: float = 30.0  # an accepted request is answered (or refused with 503) within this
    max_connections: int = 512  # open connections per worker; more get 503 with Retry-After
    keep_alive_seconds: float = 5.0
    drain_seconds: float = 30.0
    min_confidence: float | None = None
    access_log: bool = False
