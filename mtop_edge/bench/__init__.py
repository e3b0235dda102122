"""`mtop-edge bench`: latency, throughput, size, memory and accuracy of mtop-edge beside the engines
people use instead, measured in one run on one machine (heavy dependencies; the `bench` extra).

``run.py`` orchestrates, ``worker.py`` runs one engine per process, ``engines.py`` wraps each engine,
``artifacts.py`` builds what they load, ``report.py`` writes the tables and plots.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__all__ = ["BenchOptions", "run_bench"]

if TYPE_CHECKING:
    from mtop_edge.bench.options import BenchOptions
    from mtop_edge.bench.run import run_bench


def __getattr__(name: str) -> Any:  # the CLI imports this package for --help: the run's imports wait for a run
    if name == "BenchOptions":
        from mtop_edge.bench.options import BenchOptions

        return BenchOptions
    if name == "run_bench":
        from mtop_edge.bench.run import run_bench

        return run_bench
    raise AttributeError(f"module 'mtop_edge.bench' has no attribute {name!r}")
