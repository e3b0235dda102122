"""What a benchmark run measures (the CLI's options; the defaults are the CLI's)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from mtop_edge.bench.engines import DEFAULT_ENGINES
from mtop_edge.data import EVAL_SAMPLE


@dataclass
class BenchOptions:
    models: list[Path] = field(default_factory=list)
    reference_shape: bool = True
    data: Path = EVAL_SAMPLE
    engines: list[str] = field(default_factory=lambda: list(DEFAULT_ENGINES["cpu"]))
    threads: list[int] = field(default_factory=lambda: [1, 2])
    batch_sizes: list[int] = field(default_factory=lambda: [1, 8, 32, 128])
    rows: int = 200
    throughput_rows: int = 1024  # fewer rows make batch-32 figures move between runs (benchmarks/README.md)
    warmup: int = 10
    out: Path = Path("benchmarks/results")
    work: Path = Path("benchmarks/.work")
    device: str = "cpu"
    profiles: list[Path] = field(default_factory=list)
