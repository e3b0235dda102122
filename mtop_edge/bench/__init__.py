"""`mtop-edge bench`: latency, throughput, size, memory and accuracy of mtop-edge beside the engines
people use instead, measured in one run on one machine (heavy dependencies; the `bench` extra).

Each engine runs in its own worker process; the orchestrator hands the same utterances to every
worker in turns (the order rotating each round), so machine noise hits all engines alike.
"""

from __future__ import annotations

import json
import math
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from mtop_edge.bench.artifacts import build_artifacts, needed_kinds, profile_kind, size_on_disk
from mtop_edge.bench.engines import DEFAULT_ENGINES, ENGINES, base_name, variant
from mtop_edge.core.forms import same_parse
from mtop_edge.core.pointer import split_words, to_pointer_tokens
from mtop_edge.core.source import SourceEncoder
from mtop_edge.core.spec import PointerSpec
from mtop_edge.data import Example, read_examples
from mtop_edge.errors import InputError, MtopEdgeError, require
from mtop_edge.formats import checkpoint_spec
from mtop_edge.torch_engine import is_pointer_head_checkpoint

SAMPLES = Path(__file__).resolve().parents[1] / "samples"
REFERENCE_SHAPE = "mt5-small-shape"


@dataclass
class BenchOptions:
    models: list[Path] = field(default_factory=list)
    reference_shape: bool = True
    data: Path = SAMPLES / "eval_sample.jsonl"
    engines: list[str] = field(default_factory=lambda: list(DEFAULT_ENGINES["cpu"]))
    threads: list[int] = field(default_factory=lambda: [1, 2])
    batch_sizes: list[int] = field(default_factory=lambda: [1, 8, 32, 128])
    rows: int = 200
    throughput_rows: int = 256
    warmup: int = 10
    out: Path = Path("benchmarks/results")
    work: Path = Path("benchmarks/.work")
    device: str = "cpu"
    profiles: list[Path] = field(default_factory=list)


class Worker:
    """One engine in a subprocess (see worker.py)."""

    def __init__(self, engine: str, artifacts: dict, threads: int, device: str) -> None:
        import os

        self.engine = engine
        config = {
            "engine": engine,
            "artifacts": artifacts,
            "checkpoint": artifacts["checkpoint"],
            "threads": threads,
            "device": device,
        }
        env = {
            **os.environ,
            "OMP_NUM_THREADS": str(threads),
            "MKL_NUM_THREADS": str(threads),
            "TOKENIZERS_PARALLELISM": "false",
            "HF_HUB_OFFLINE": "1",
        }
        self.process = subprocess.Popen(
            [sys.executable, "-m", "mtop_edge.bench.worker", json.dumps(config)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
            env=env,
        )
        self.ready = self._read()

    def _read(self) -> dict:
        line = self.process.stdout.readline()
        if not line:
            code = self.process.wait()
            raise MtopEdgeError(f"bench worker for {self.engine} exited with code {code}")
        return json.loads(line)

    def ask(self, request: dict) -> dict:
        self.process.stdin.write(json.dumps(request) + "\n")
        self.process.stdin.flush()
        return self._read()

    def run(self, sources, n_words, forced_steps) -> dict:
        return self.ask({"op": "run", "sources": sources, "n_words": n_words, "forced_steps": forced_steps})

    def close(self) -> float:
        peak = self.ask({"op": "close"})["peak_rss_mb"]
        self.process.wait(timeout=60)
        return peak


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


@dataclass
class Inputs:
    """The encoded eval rows every engine receives, and the step count forced on random weights."""

    examples: list[Example]
    sources: list[list[int]]
    n_words: list[int]
    forced_steps: int | None


def prepare_inputs(
    checkpoint: Path, spec: PointerSpec, examples: Sequence[Example], rows: int, trained: bool
) -> Inputs:
    encoder = SourceEncoder.load(checkpoint, spec)
    kept, sources, counts = [], [], []
    for example in examples:
        try:
            source = encoder.prepare(example.utterance)
            sources.append(source.ids)
        except InputError:
            continue
        kept.append(example)
        counts.append(len(source.words))
        if len(kept) == rows:
            break
    forced = None
    if not trained:  # the mean MTOP target length, EOS included
        lengths = [len(to_pointer_tokens(e.tree, split_words(e.utterance))) + 1 for e in kept]
        forced = round(sum(lengths) / len(lengths))
    return Inputs(kept, sources, counts, forced)


def exact_match(spec: PointerSpec, inputs: Inputs, outputs: Sequence[Sequence[int]]) -> float:
    hits = sum(
        same_parse(spec.try_decode(ids, e.utterance, split_words(e.utterance)), e.tree)
        for e, ids in zip(inputs.examples, outputs, strict=True)
    )
    return hits / len(inputs.examples)


def _in_turns(workers: list[Worker], requests: Sequence[tuple], record: Callable[[Worker, int, dict], None]) -> None:
    """Each request goes to every worker before the next request; the order rotates each round."""
    for index, (sources, n_words, forced) in enumerate(requests):
        shift = index % len(workers)
        for worker in workers[shift:] + workers[:shift]:
            record(worker, index, worker.run(sources, n_words, forced))


@dataclass
class Timings:
    """What one thread setting measured, per engine: ms per batch by batch size, batch-1 outputs."""

    first_ms: dict[str, float] = field(default_factory=dict)
    ms: dict[tuple[str, int], list[float]] = field(default_factory=dict)
    outputs: dict[str, list] = field(default_factory=dict)


def measure(workers: list[Worker], inputs: Inputs, options: BenchOptions, log: Callable) -> Timings:
    """First parse, warm-up, batch-1 latency on every utterance, then each batch size, all in turns."""
    timings = Timings()
    forced = inputs.forced_steps
    for worker in workers:
        timings.first_ms[worker.engine] = worker.run(inputs.sources[:1], inputs.n_words[:1], forced)["seconds"] * 1000
        timings.outputs[worker.engine] = [None] * len(inputs.sources)
    warm = [([s], [n], forced) for s, n in zip(inputs.sources[: options.warmup], inputs.n_words, strict=False)]
    _in_turns(workers, warm, lambda *_: None)

    def record(batch_size: int):
        def keep(worker: Worker, index: int, reply: dict) -> None:
            timings.ms.setdefault((worker.engine, batch_size), []).append(reply["seconds"] * 1000)
            if batch_size == 1:
                timings.outputs[worker.engine][index] = reply["outputs"][0]

        return keep

    for batch_size in options.batch_sizes:
        if batch_size == 1:  # every utterance, one by one
            requests = [([s], [n], forced) for s, n in zip(inputs.sources, inputs.n_words, strict=True)]
        else:  # the utterances in order, cycled to fill whole batches
            total = max(batch_size, math.ceil(options.throughput_rows / batch_size) * batch_size)
            pool = [i % len(inputs.sources) for i in range(total)]
            requests = [
                (
                    [inputs.sources[i] for i in pool[k : k + batch_size]],
                    [inputs.n_words[i] for i in pool[k : k + batch_size]],
                    forced,
                )
                for k in range(0, total, batch_size)
            ]
        log(f"    batch {batch_size}: {len(requests)} requests per engine")
        _in_turns(workers, requests, record(batch_size))
    return timings


def bench_model(
    name: str, checkpoint: Path, trained: bool, options: BenchOptions, examples: Sequence[Example], log: Callable
) -> list[dict]:
    """Every engine on one checkpoint, at every thread setting: one row per engine x threads x batch size."""
    spec = checkpoint_spec(checkpoint)
    inputs = prepare_inputs(checkpoint, spec, examples, options.rows, trained)
    # constrained decoding cannot run a forced number of steps: on random weights only the unconstrained runtime
    engines = [e for e in options.engines if trained or not (e.startswith("mtop-edge") and variant(e) == "")]
    engines += [profile_kind(p) + ("" if trained else "-unconstrained") for p in options.profiles]
    if is_pointer_head_checkpoint(checkpoint):  # a model class of our own: other engines know plain T5 only
        others = [e for e in engines if base_name(e).startswith(("ctranslate2", "optimum"))]
        if others:
            log(
                f"{name}: a pointer-head checkpoint, which CTranslate2 and optimum cannot run: "
                f"{', '.join(others)} left out"
            )
            engines = [e for e in engines if e not in others]
    log(
        f"{name}: {len(inputs.sources)} utterances, engines {', '.join(engines)}"
        + (f", {inputs.forced_steps} forced decoding steps" if inputs.forced_steps else "")
    )
    artifacts = build_artifacts(
        checkpoint, spec, needed_kinds(engines), options.work, log=log, profiles=options.profiles
    )
    rows: list[dict] = []
    for threads in options.threads:
        log(f"  {name}, {threads} thread(s): loading {len(engines)} workers")
        workers = [Worker(engine, artifacts, threads, options.device) for engine in engines]
        peaks: dict[str, float] = {}
        try:
            timings = measure(workers, inputs, options, log)
        finally:
            for worker in workers:
                try:
                    peaks[worker.engine] = worker.close()
                except (MtopEdgeError, OSError, ValueError):
                    worker.process.kill()
        for worker in workers:
            engine = worker.engine
            scored = trained and 1 in options.batch_sizes  # exact match is scored on the batch-1 outputs
            em = exact_match(spec, inputs, timings.outputs[engine]) if scored else None
            common = {
                "engine": base_name(engine),
                "variant": variant(engine),
                "model": name,
                "threads": threads,
                "device": options.device,
                "forced_steps": inputs.forced_steps,
                "load_s": round(worker.ready["load_s"], 3),
                "first_parse_ms": round(timings.first_ms[engine], 2),
                "peak_rss_mb": round(peaks.get(engine, float("nan")), 1),
                "size_mb": round(size_on_disk(engine, artifacts) / 1e6, 2),
                "exact_match": em,
            }
            for batch_size in options.batch_sizes:
                ms = timings.ms[(engine, batch_size)]
                row = {
                    **common,
                    "batch_size": batch_size,
                    "p50_ms": round(percentile(ms, 0.5), 3),
                    "p90_ms": round(percentile(ms, 0.9), 3),
                    "p99_ms": round(percentile(ms, 0.99), 3),
                    "utterances_per_s": round(1000 * batch_size * len(ms) / sum(ms), 2),
                }
                if batch_size == 1:
                    row["latencies_ms"] = [round(x, 3) for x in ms]
                rows.append(row)
    return rows


def run_bench(options: BenchOptions, log: Callable[[str], None] = print) -> dict:
    """Run the suite; writes JSON, Markdown and PNG plots under ``options.out``; returns the JSON."""
    needed = ["torch", "transformers", "optimum", "matplotlib"]  # optimum: every engine's model is exported
    if any(e.startswith("ctranslate2") for e in options.engines):  # a GPU host may lack it: needed only if asked
        needed.append("ctranslate2")
    for module in needed:
        require(module, "bench")
    from mtop_edge.bench import report
    from mtop_edge.bench.shapes import build_reference_shape

    unknown = sorted(set(options.engines) - set(ENGINES))
    if unknown:
        raise MtopEdgeError(f"unknown engine(s) {', '.join(unknown)}; choose from {', '.join(ENGINES)}")
    started = time.time()
    examples = read_examples(options.data)
    models = [(Path(m).name, Path(m), True) for m in options.models]
    if options.reference_shape:
        shape = build_reference_shape(options.work / REFERENCE_SHAPE, SAMPLES / "train_sample.jsonl")
        models.append((REFERENCE_SHAPE, shape, False))
    if not models:
        raise MtopEdgeError("nothing to benchmark: pass --model DIR or keep --reference-shape")
    rows = []
    for name, checkpoint, trained in models:
        rows.extend(bench_model(name, checkpoint, trained, options, examples, log))
    result = {
        "created": time.strftime("%Y-%m-%dT%H:%M:%S"),
        "minutes": round((time.time() - started) / 60, 1),
        "machine": machine_info(),
        "settings": {
            "data": str(options.data),
            "rows": options.rows,
            "throughput_rows": options.throughput_rows,
            "warmup": options.warmup,
            "threads": options.threads,
            "batch_sizes": options.batch_sizes,
            "device": options.device,
        },
        "rows": rows,
    }
    report.write(result, options.out)
    return result
