"""A/B of onnxruntime thread pools for one parser: a pool per session (onnxruntime's default) against
one pool shared by the encoder and both decoders (`share_thread_pool`), at 1 and 2 threads.

    python benchmarks/thread_pool_ab.py [--model DIR] [--rows 200] [--rounds 3]

Each setting runs in its own process (the shared pool is process-wide), the settings alternate for
``--rounds`` rounds, and each reports batch-1 p50 over the in-repo eval sample and utterances/s at
batch 32. Prints one JSON line per measurement and a summary table of the medians.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
from pathlib import Path

from mtop_edge.data import EVAL_SAMPLE

ROOT = Path(__file__).resolve().parents[1]
WORKER = """
import json, statistics, sys, time
from mtop_edge.runtime import Parser, share_thread_pool
model, threads, shared, rows = sys.argv[1] or None, int(sys.argv[2]), sys.argv[3] == "1", int(sys.argv[4])
pool = share_thread_pool(threads) if shared else None
parser = Parser.load(model, threads=threads, pool=pool)
lines = open(sys.argv[5]).read().splitlines()
utterances = [json.loads(line)["utterance"] for line in lines][:rows]
for u in utterances[:10]:
    parser.parse(u)
times = []
for u in utterances:
    begin = time.perf_counter(); parser.parse(u); times.append((time.perf_counter() - begin) * 1000)
begin = time.perf_counter()
parser.parse_batch(utterances, batch_size=32)
print(json.dumps({"p50_ms": statistics.median(times), "b32_utt_s": len(utterances) / (time.perf_counter() - begin)}))
"""


def main() -> None:
    arguments = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    arguments.add_argument("--model", default="")
    arguments.add_argument("--rows", type=int, default=200)
    arguments.add_argument("--rounds", type=int, default=3)
    args = arguments.parse_args()
    sample = EVAL_SAMPLE
    results: dict[tuple[int, str], list[dict]] = {}
    for _ in range(args.rounds):
        for threads in (1, 2):
            for pool in ("per session", "shared"):
                command = [sys.executable, "-c", WORKER, args.model, str(threads), str(int(pool == "shared"))]
                reply = subprocess.run(
                    [*command, str(args.rows), str(sample)], check=True, capture_output=True, text=True
                )
                row = json.loads(reply.stdout.strip().splitlines()[-1])
                results.setdefault((threads, pool), []).append(row)
                print(json.dumps({"threads": threads, "pool": pool, **row}), flush=True)
    print("\n| threads | pool | batch-1 p50 ms | utt/s at batch 32 |\n|---|---|---|---|")
    for (threads, pool), rows in results.items():
        p50 = statistics.median(r["p50_ms"] for r in rows)
        b32 = statistics.median(r["b32_utt_s"] for r in rows)
        print(f"| {threads} | {pool} | {p50:.2f} | {b32:.0f} |")


if __name__ == "__main__":
    main()
