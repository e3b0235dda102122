"""Choices the runtime, the service and every command share, in a module with no dependencies
(the CLI lists them in --help without importing onnxruntime)."""

from __future__ import annotations

from enum import Enum


class Device(str, Enum):
    """Where the runtime runs."""

    CPU = "cpu"
    CUDA = "cuda"


class Constraints(str, Enum):
    """What decoding may produce."""

    PAIRS = "pairs"  # well-formed trees with only the label pairs seen in training (when the manifest has them)
    TREE = "tree"  # well-formed trees
    NONE = "none"  # whatever the model emits, which may not be a tree


class RayIngress(str, Enum):
    """What receives HTTP in front of the Ray Serve replicas."""

    HAPROXY = "haproxy"  # Ray's HAProxy straight to each replica's own HTTP port (RAY_SERVE_ENABLE_HA_PROXY)
    PROXY = "proxy"  # Ray's Python proxy actor, which hands each request to a replica over Ray


DEVICES = tuple(d.value for d in Device)
