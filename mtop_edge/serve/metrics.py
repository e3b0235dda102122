"""Prometheus metrics of the service: requests, errors, latency, batch sizes, queue depth, per worker.

With one worker each app has its own registry (tests build several apps in one process). With
``--workers N`` the supervisor points prometheus-client's multiprocess mode at a directory of its
own (``PROMETHEUS_MULTIPROC_DIR``), so whichever worker answers ``/metrics`` reports every worker's
series, told apart by the ``worker`` label.
"""

from __future__ import annotations

import os

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256)
MULTIPROCESS_DIR = "PROMETHEUS_MULTIPROC_DIR"  # prometheus-client's own setting, read at its import


class Metrics:
    """The service's metrics for one worker (``worker``: its index)."""

    def __init__(self, worker: int = 0) -> None:
        self.worker = str(worker)
        self.multiprocess = bool(os.environ.get(MULTIPROCESS_DIR))
        # multiprocess values live in files: the metrics must not also sit in a registry of their own
        self.registry = None if self.multiprocess else CollectorRegistry()
        kwargs = {"registry": self.registry}
        self.requests = Counter(
            "mtop_edge_requests", "HTTP requests by route and status", ["worker", "route", "status"], **kwargs
        )
        self.errors = Counter(
            "mtop_edge_errors", "Rejected requests and failed items by reason", ["worker", "reason"], **kwargs
        )
        self.latency = Histogram(
            "mtop_edge_request_seconds",
            "Time from request to response",
            ["worker", "route"],
            buckets=LATENCY_BUCKETS,
            **kwargs,
        )
        self.batch_size = Histogram(
            "mtop_edge_batch_size", "Utterances per runtime batch", ["worker"], buckets=BATCH_BUCKETS, **kwargs
        )
        self.utterances = Counter("mtop_edge_utterances", "Utterances parsed", ["worker"], **kwargs)
        self.queue_depth = Gauge(
            "mtop_edge_queue_depth",
            "Utterances queued or being parsed",
            ["worker"],
            multiprocess_mode="livesum",
            **kwargs,
        )

    def request(self, route: str, status: int, seconds: float | None = None) -> None:
        self.requests.labels(self.worker, route, str(status)).inc()
        if seconds is not None:
            self.latency.labels(self.worker, route).observe(seconds)

    def error(self, reason: str) -> None:
        self.errors.labels(self.worker, reason).inc()

    def batch(self, size: int) -> None:
        self.batch_size.labels(self.worker).observe(size)

    def parsed(self, count: int) -> None:
        self.utterances.labels(self.worker).inc(count)

    def queued(self, depth: int) -> None:
        self.queue_depth.labels(self.worker).set(depth)

    def render(self) -> bytes:
        if not self.multiprocess:
            return generate_latest(self.registry)
        from prometheus_client import multiprocess

        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)
        return generate_latest(registry)
