"""A/B of exported model directories through the runtime: alternating processes, same utterances.

    python benchmarks/export_ab.py DIR_A DIR_B [...] [--threads 1] [--rows 200] [--batch-rows 1024] [--rounds 3]

Each directory runs in its own process per round (the settings alternate, so a noisy neighbour
hits every one), and reports the batch-1 p50 over the in-repo eval sample's first ``--rows``
utterances (after 10 untimed) and utterances/s over ``--batch-rows`` utterances (the sample
repeated) in 32-row calls. The first round also records every parse, and the summary says how many
of them equal the first directory's. Prints one JSON line per measurement, then a table of medians.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys

from mtop_edge.data import EVAL_SAMPLE

WORKER = """
import json, statistics, sys, time
from mtop_edge.runtime import Parser
model, sample = sys.argv[1], sys.argv[5]
threads, rows, batch_rows = (int(a) for a in sys.argv[2:5])
parser = Parser.load(model, threads=threads)
utterances = [json.loads(line)["utterance"] for line in open(sample).read().splitlines()]
for u in utterances[:10]:
    parser.parse(u)
times, parses = [], []
for u in utterances[:rows]:
    begin = time.perf_counter(); result = parser.parse(u); times.append((time.perf_counter() - begin) * 1000)
    parses.append(result.logical_form)
batch = (utterances * (batch_rows // len(utterances) + 1))[:batch_rows]
begin = time.perf_counter()
parser.parse_batch(batch, batch_size=32)
rate = len(batch) / (time.perf_counter() - begin)
print(json.dumps({"p50_ms": statistics.median(times), "b32_utt_s": rate, "parses": parses}))
"""


def main() -> None:
    arguments = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    arguments.add_argument("models", nargs="+")
    arguments.add_argument("--threads", type=int, default=1)
    arguments.add_argument("--rows", type=int, default=200)
    arguments.add_argument("--batch-rows", type=int, default=1024)
    arguments.add_argument("--rounds", type=int, default=3)
    args = arguments.parse_args()
    results: dict[str, list[dict]] = {model: [] for model in args.models}
    parses: dict[str, list[str]] = {}
    for _ in range(args.rounds):
        for model in args.models:
            command = [sys.executable, "-c", WORKER, model, str(args.threads), str(args.rows), str(args.batch_rows)]
            reply = subprocess.run([*command, str(EVAL_SAMPLE)], check=True, capture_output=True, text=True)
            row = json.loads(reply.stdout.strip().splitlines()[-1])
            parses.setdefault(model, row.pop("parses"))
            results[model].append(row)
            print(json.dumps({"model": model, "threads": args.threads, **row}), flush=True)
    first = parses[args.models[0]]
    print(f"\n| model | batch-1 p50 ms | utt/s in 32-row calls | parses equal to {args.models[0]} |\n|---|---|---|---|")
    for model, rows in results.items():
        p50 = statistics.median(r["p50_ms"] for r in rows)
        rate = statistics.median(r["b32_utt_s"] for r in rows)
        equal = sum(a == b for a, b in zip(parses[model], first, strict=True))
        print(f"| {model} | {p50:.2f} | {rate:.0f} | {equal}/{len(first)} |")


if __name__ == "__main__":
    main()
