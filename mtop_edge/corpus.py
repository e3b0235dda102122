"""Corpora on Ray Data (the ``ray`` extra): ``mtop-edge parse --ray INPUT --output DIR``.

Text files (one utterance a line) or JSONL files (``{"utterance": ...}`` a line), a file or a
directory of them, are read in parallel; every line keeps its source file and line number. An
actor pool (``--actors N``, one model load per actor, one CPU each) parses batches of them, and
the records (those of ``parse --json`` plus ``source`` and ``line``) are written in input order to
one ``DIR/NAME.jsonl`` per input file ``NAME``. A line that cannot be parsed (invalid UTF-8 or JSON, empty,
too long for the model) becomes a record with ``error``: as many records come out as lines went
in. A failed actor is restarted by Ray and its batch run again, so no line is lost or doubled.
"""

from __future__ import annotations

import json
import shutil
import tempfile
import time
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import TextIO

import numpy as np

from mtop_edge.lines import parse_records, read_line

SUFFIXES = (".txt", ".jsonl")
# ~3,200 lines: the unit one actor takes at a time. Smaller blocks and batches left an actor idle
# between calls (Ray's work per call) more than they spread the lines (benchmarks/README.md)
BLOCK_BYTES = 256 << 10
ROWS_PER_BATCH = 1024  # a Ray batch: the parser sorts it by length and slices it into its own (Parser.max_batch)


@dataclass(frozen=True)
class CorpusOptions:
    """What the actors load and how they parse (the parse command's options)."""

    model: str | None = None
    device: str = "cpu"
    threads: int | None = 1
    constraints: str = "pairs"
    truncate: bool = False
    min_confidence: float | None = None


def input_files(path: Path) -> list[Path]:
    """``path`` itself, or the text and JSONL files directly in the directory ``path``, by name.

    Raises:
        DataError: nothing to read.
    """
    from mtop_edge.errors import DataError

    if path.is_file():
        return [path]
    files = sorted(p for p in path.glob("*") if p.is_file() and p.suffix in SUFFIXES) if path.is_dir() else []
    if not files:
        raise DataError(f"no {' or '.join(SUFFIXES)} files to parse", path)
    return files


def split_lines(row: dict) -> list[dict]:
    """One file's bytes -> a row per line: source, line number, and the utterance or why there is none."""
    source = row["path"]
    jsonl = source.endswith(".jsonl")
    rows = []
    for number, raw in enumerate(row["bytes"].splitlines(), start=1):
        utterance, error = read_line(raw, jsonl)
        # plain strings only ("" = none): columnar formats turn None into NaN
        rows.append({"source": source, "line": number, "utterance": utterance or "", "error": error or ""})
    return rows


class ParseActor:
    """Loads the model once; each call parses a batch of lines into JSON records."""

    def __init__(self, options: CorpusOptions) -> None:
        from mtop_edge.runtime import Parser, share_thread_pool

        pool = share_thread_pool(options.threads) if options.device == "cpu" else None
        self.parser = Parser.load(
            options.model,
            device=options.device,
            threads=options.threads,
            pool=pool,
            constraints=options.constraints,
            min_confidence=options.min_confidence,
        )
        self.truncate = options.truncate

    def __call__(self, batch: dict) -> dict:
        sources = [str(s) for s in batch["source"]]
        lines = [
            ({"source": source, "line": int(number)}, str(utterance) or None, str(error) or None)
            for source, number, utterance, error in zip(
                sources, batch["line"], batch["utterance"], batch["error"], strict=True
            )
        ]
        records = parse_records(self.parser, lines, self.truncate)
        return {
            "source": np.array(sources, dtype=object),
            "record": np.array([json.dumps(r, ensure_ascii=False) for r in records], dtype=object),
            "failed": np.array(["error" in r for r in records]),
        }


def parse_corpus(
    path: Path, output: Path, options: CorpusOptions, *, actors: int = 1, address: str | None = None, log=print
) -> dict:
    """Parse every line under ``path`` into ``output`` (a directory); returns the counts and timing.

    Raises:
        DataError: nothing to read. MtopEdgeError: ``output`` exists and is not an empty directory.
    """
    import ray

    from mtop_edge.errors import MtopEdgeError

    files = input_files(path)
    if output.exists() and (not output.is_dir() or any(output.iterdir())):
        raise MtopEdgeError(f"{output} exists and is not empty: a corpus's records go to a directory of their own")
    started = time.perf_counter()
    # a local cluster of the command's own starts no dashboard: nobody would look at it before the
    # command ends, and it costs start-up time and CPU beside the actors
    local = {"include_dashboard": False} if address is None else {}
    ray.init(address=address, ignore_reinit_error=True, logging_level="ERROR", log_to_driver=False, **local)
    context = ray.data.DataContext.get_current()
    context.execution_options.preserve_order = True  # records in input order, per file and across them
    context.enable_progress_bars = False
    # one block per task: small blocks let a single large file spread over every actor
    context.target_max_block_size = BLOCK_BYTES
    # reading and splitting lines claim no CPU: the actors may hold every CPU of a small cluster
    # (``--actors 2`` on two cores), and reads that wait for one would never run
    dataset = ray.data.read_binary_files([str(f) for f in files], include_paths=True, ray_remote_args={"num_cpus": 0})
    parsed = dataset.flat_map(split_lines, num_cpus=0).map_batches(
        ParseActor,
        fn_constructor_args=(options,),
        batch_size=ROWS_PER_BATCH,
        batch_format="numpy",
        compute=ray.data.ActorPoolStrategy(size=actors),
        num_cpus=options.threads or 1,
        max_restarts=-1,  # a dead actor comes back, and its batch runs again
        max_task_retries=-1,
    )
    # written beside the output and renamed into place at the end: a failed run leaves nothing half-written
    output.parent.mkdir(parents=True, exist_ok=True)
    scratch = Path(tempfile.mkdtemp(prefix=f".{output.name}.tmp-", dir=output.parent))
    counts = {"rows": 0, "failed": 0}
    names = {str(f.resolve()): scratch / (f.name + ".jsonl") for f in files}  # a.txt -> a.txt.jsonl
    try:
        with ExitStack() as open_files:
            handles: dict[str, TextIO] = {}
            for batch in parsed.iter_batches(batch_size=None, batch_format="numpy"):
                for source, record, failed in zip(batch["source"], batch["record"], batch["failed"], strict=True):
                    if source not in handles:
                        target = names[str(Path(source).resolve())]
                        handles[source] = open_files.enter_context(target.open("w", encoding="utf-8"))
                    handles[source].write(record + "\n")
                    counts["rows"] += 1
                    counts["failed"] += bool(failed)
        if output.exists():
            output.rmdir()  # empty: checked above
        scratch.rename(output)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    seconds = time.perf_counter() - started
    done = f"parsed {counts['rows']} lines from {len(files)} file(s) into {output} in {seconds:.1f} s"
    log(f"{done} ({counts['failed']} failed)")
    return {**counts, "files": len(files), "seconds": seconds}
