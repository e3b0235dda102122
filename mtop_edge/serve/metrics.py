"""Prometheus metrics of one service process: requests, errors, latency, batch sizes, queue depth."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256)


class Metrics:
    """One registry per app, so several apps (tests) never share counters."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "mtop_edge_requests", "HTTP requests by route and status", ["route", "status"], registry=self.registry
        )
        self.errors = Counter(
            "mtop_edge_errors", "Rejected requests and failed items by reason", ["reason"], registry=self.registry
        )
        self.latency = Histogram(
            "mtop_edge_request_seconds",
            "Time from request to response",
            ["route"],
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.batch_size = Histogram(
            "mtop_edge_batch_size", "Utterances per runtime batch", buckets=BATCH_BUCKETS, registry=self.registry
        )
        self.utterances = Counter("mtop_edge_utterances", "Utterances parsed", registry=self.registry)
        self.queue_depth = Gauge("mtop_edge_queue_depth", "Utterances queued or being parsed", registry=self.registry)

    def render(self) -> bytes:
        return generate_latest(self.registry)
