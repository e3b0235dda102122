"""Statistics of timings, and the machine a run was measured on."""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path


def percentile(values: Sequence[float], q: float) -> float:
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    k = (len(ordered) - 1) * q
    low, high = math.floor(k), math.ceil(k)
    return ordered[low] + (ordered[high] - ordered[low]) * (k - low)


def machine_info() -> dict:
    """CPU model, cores, vector extensions and library versions, recorded with every run."""
    import os
    import platform

    from mtop_edge import __version__

    info: dict = {"platform": platform.platform(), "python": platform.python_version(), "cores": os.cpu_count()}
    try:
        lines = Path("/proc/cpuinfo").read_text().splitlines()
        info["cpu"] = next(line.split(":", 1)[1].strip() for line in lines if line.startswith("model name"))
        flags = next(line.split(":", 1)[1].split() for line in lines if line.startswith("flags"))
        info["cpu_flags"] = sorted(f for f in flags if f in ("avx2", "avx512f", "avx512_vnni", "avx_vnni", "amx_int8"))
    except (OSError, StopIteration):
        info["cpu"] = platform.processor() or None
    versions = {"mtop_edge": __version__}
    for module in ("onnxruntime", "numpy", "torch", "transformers", "optimum.version", "ctranslate2", "sentencepiece"):
        try:
            versions[module.split(".")[0]] = __import__(module, fromlist=["_"]).__version__
        except (ImportError, AttributeError):
            versions[module.split(".")[0]] = None
    info["versions"] = versions
    return info
