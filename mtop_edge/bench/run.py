"""The benchmark run: every engine on every model, at every thread setting and batch size, in turns.

Each engine runs in its own worker process (``worker.py``); the orchestrator hands the same
utterances to every worker in turns (the order rotating each round), so machine noise hits all
engines alike.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from mtop_edge.bench.artifacts import build_artifacts, needed_kinds, profile_kind, size_on_disk
from mtop_edge.bench.engines import ENGINES
from mtop_edge.bench.inputs import Inputs, exact_match, prepare_inputs
from mtop_edge.bench.names import EngineName
from mtop_edge.bench.options import BenchOptions
from mtop_edge.bench.stats import machine_info, percentile
from mtop_edge.bench.worker import Worker
from mtop_edge.data import TRAIN_SAMPLE, Example, read_examples
from mtop_edge.errors import MtopEdgeError, require
from mtop_edge.formats import checkpoint_spec
from mtop_edge.modeling import ENCODER_POINTER_TYPE
from mtop_edge.modeling.torch_engine import checkpoint_model_type, is_pointer_head_checkpoint

REFERENCE_SHAPE = "mt5-small-shape"


def _in_turns(workers: list[Worker], requests: Sequence[tuple], record: Callable[[Worker, int, dict], None]) -> None:
    """Each request goes to every worker before the next request; the order rotates each round."""
    for index, request in enumerate(requests):
        shift = index % len(workers)
        for worker in workers[shift:] + workers[:shift]:
            record(worker, index, worker.run(*request))


@dataclass
class Timings:
    """What one thread setting measured, per engine: ms per batch by batch size, batch-1 outputs."""

    first_ms: dict[str, float] = field(default_factory=dict)
    ms: dict[tuple[str, int], list[float]] = field(default_factory=dict)
    outputs: dict[str, list] = field(default_factory=dict)


def measure(workers: list[Worker], inputs: Inputs, options: BenchOptions, log: Callable) -> Timings:
    """First parse, warm-up, batch-1 latency on every utterance, then each batch size, all in turns."""
    timings = Timings()
    for worker in workers:
        timings.first_ms[worker.engine] = worker.run(*inputs.request([0]))["seconds"] * 1000
        timings.outputs[worker.engine] = [None] * len(inputs.sources)
    warm = [inputs.request([i]) for i in range(min(options.warmup, len(inputs.sources)))]
    _in_turns(workers, warm, lambda *_: None)

    def record(batch_size: int):
        def keep(worker: Worker, index: int, reply: dict) -> None:
            timings.ms.setdefault((worker.engine, batch_size), []).append(reply["seconds"] * 1000)
            if batch_size == 1:
                timings.outputs[worker.engine][index] = reply["outputs"][0]

        return keep

    for batch_size in options.batch_sizes:
        if batch_size == 1:  # every utterance, one by one
            requests = [inputs.request([i]) for i in range(len(inputs.sources))]
        else:  # the utterances in order, cycled to fill whole batches
            total = max(batch_size, math.ceil(options.throughput_rows / batch_size) * batch_size)
            pool = [i % len(inputs.sources) for i in range(total)]
            requests = [inputs.request(pool[k : k + batch_size]) for k in range(0, total, batch_size)]
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
    engines = [e for e in options.engines if trained or not EngineName.parse(e).constrained]
    engines += [profile_kind(p) + ("" if trained else "-unconstrained") for p in options.profiles]
    own_kind = is_pointer_head_checkpoint(checkpoint) or checkpoint_model_type(checkpoint) == ENCODER_POINTER_TYPE
    if own_kind:  # a model class of our own: other engines know plain T5 only
        others = [e for e in engines if EngineName.parse(e).family in ("ctranslate2", "optimum")]
        if others:
            log(
                f"{name}: a model kind of this project's, which CTranslate2 and optimum cannot run: "
                f"{', '.join(others)} left out"
            )
            engines = [e for e in engines if e not in others]
    if not engines:
        asked = ", ".join(options.engines + [profile_kind(p) for p in options.profiles])
        log(f"{name}: none of the engines asked for ({asked}) can run it; skipped")
        return []
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
            parsed = EngineName.parse(engine)
            common = {
                "engine": parsed.base,
                "variant": parsed.variant,
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
        shape = build_reference_shape(options.work / REFERENCE_SHAPE, TRAIN_SAMPLE)
        models.append((REFERENCE_SHAPE, shape, False))
    if not models:
        raise MtopEdgeError("nothing to benchmark: pass --model DIR or keep --reference-shape")
    rows = []
    for name, checkpoint, trained in models:
        rows.extend(bench_model(name, checkpoint, trained, options, examples, log))
    if not rows:  # every model skipped: nothing measured, nothing written
        raise MtopEdgeError(
            "no engine asked for can run these models (random-weight shapes need an -unconstrained engine)"
        )
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
