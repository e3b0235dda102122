"""What a Ray cluster's environment must say for each `RayIngress` (no Ray import: it is set first)."""

from __future__ import annotations

import os
import socket
from collections.abc import Mapping

from mtop_edge.choices import RayIngress


def ingress_environment(ingress: RayIngress, environ: Mapping[str, str] = os.environ) -> dict[str, str]:
    """The variables a Ray cluster must start with for ``ingress``, given the current ``environ``.

    Ray Serve reads these once, when each of its processes starts, so a local cluster gets them from
    this process (``os.environ`` before Ray is imported) and a cluster of one's own from its
    ``ray start``. The two that choose the ingress are always set; HAProxy's thread count keeps a
    value already in ``environ``, else a thread per two cores, at most four (Ray's default of four on
    any machine takes time from the replicas on a small one).
    """
    if ingress is RayIngress.PROXY:
        return {"RAY_SERVE_ENABLE_HA_PROXY": "0", "RAY_SERVE_ENABLE_DIRECT_INGRESS": "0"}
    threads = environ.get("RAY_SERVE_HAPROXY_NBTHREAD") or str(max(1, min(4, (os.cpu_count() or 1) // 2)))
    return {
        "RAY_SERVE_ENABLE_HA_PROXY": "1",  # implies direct ingress: every replica listens on its own port
        "RAY_SERVE_THROUGHPUT_OPTIMIZED": "1",  # requests handled on the replica's main event loop
        "RAY_SERVE_HAPROXY_NBTHREAD": threads,
    }


HAPROXY_PORTS = {  # what Ray's HAProxy binds on every interface besides the service's port, and their defaults
    "RAY_SERVE_HAPROXY_STATS_PORT": 8404,
    "RAY_SERVE_HAPROXY_METRICS_PORT": 9101,
}


def busy_ingress_ports(ingress: RayIngress, environ: Mapping[str, str] = os.environ) -> list[str]:
    """HAProxy's own ports that something already holds (another `serve --ray` on this machine, say),
    as ``VARIABLE=port``: HAProxy would fail to start on them, after Ray's start-up, with no clear error."""
    if ingress is not RayIngress.HAPROXY:
        return []
    busy = []
    for variable, default in HAPROXY_PORTS.items():
        port = int(environ.get(variable) or default)
        with socket.socket() as probe:
            try:
                probe.bind(("0.0.0.0", port))
            except OSError:
                busy.append(f"{variable}={port}")
    return busy
