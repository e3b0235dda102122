"""Where a batch's decoder steps spend their time, per node type (onnxruntime's profiler).

    python benchmarks/profile_step.py --model DIR [--rows 32] [--threads 1] [--constraints none]
        [--forced-steps 10]

Parses ``--rows`` eval-sample utterances as one batch (after one untimed batch) with profiling on
in every session the parser opens (the encoder's too), then sums each graph's node time by
operator type and prints the shares, largest first. A random-weight model (the mT5-small shape)
needs ``--constraints none`` and should get ``--forced-steps`` (the bench forces the mean MTOP
target length, 10): left to itself it decodes to the step limit, and the attention over that
long a past is not what a parse costs.
"""

from __future__ import annotations

import argparse
import collections
import json
import tempfile
from pathlib import Path

import onnxruntime as ort

from mtop_edge.data import EVAL_SAMPLE


def profiled_sessions(prefix: str):
    """Every SessionOptions made from here on profiles into files named ``prefix``*."""
    original = ort.SessionOptions

    def options():
        made = original()
        made.enable_profiling = True
        made.profile_file_prefix = prefix
        return made

    ort.SessionOptions = options
    return original


def node_times(trace: Path) -> collections.Counter:
    """Microseconds per operator type in one profile (kernel events only)."""
    times: collections.Counter = collections.Counter()
    for event in json.loads(trace.read_text()):
        if event.get("cat") == "Node" and event.get("name", "").endswith("_kernel_time"):
            times[event["args"]["op_name"]] += event["dur"]
    return times


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", required=True)
    ap.add_argument("--rows", type=int, default=32)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--constraints", default="pairs")
    ap.add_argument("--forced-steps", type=int, help="decode exactly this many steps (random weights)")
    args = ap.parse_args()
    utterances = [json.loads(line)["utterance"] for line in EVAL_SAMPLE.read_text().splitlines()]
    with tempfile.TemporaryDirectory() as scratch:
        profiled_sessions(str(Path(scratch) / "profile"))
        from mtop_edge.runtime import Parser

        parser = Parser.load(args.model, threads=args.threads, constraints=args.constraints)

        def parse(rows: list[str]) -> None:
            if args.forced_steps is None:
                parser.parse_batch(rows)
                return
            sources = [parser.source.prepare(u, truncate=True) for u in rows]
            parser.decode_sources(sources, forced_steps=args.forced_steps)

        parse(utterances[args.rows : 2 * args.rows])  # untimed: first-run allocations
        parse(utterances[: args.rows])
        for file, session in parser.decoder.sessions.items():  # every graph, a per-batch export's twin too
            trace = Path(session.end_profiling())
            times = node_times(trace)
            total = sum(times.values()) or 1
            print(f"{file}: {total / 1000:.1f} ms in nodes over two batches")
            for op, microseconds in times.most_common(12):
                print(f"  {op:<28} {microseconds / 1000:8.1f} ms  {100 * microseconds / total:5.1f}%")


if __name__ == "__main__":
    main()
