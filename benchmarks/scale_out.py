"""Scaling out on one machine: native workers against Ray Serve replicas, Ray Data against `parse -`.

    python benchmarks/scale_out.py [--model DIR] [--requests 600] [--lines 20000] [--ingress haproxy,proxy]
        [--out benchmarks/results]

Every server gets the same load (benchmarks/serve_load.py's lean keep-alive client, one utterance a
request, in-repo eval sample) at concurrency 1, 8 and 32: the native server with one and two workers
(batching on), then Ray Serve with one and two replicas (one CPU and one onnxruntime thread each)
behind each ``--ingress`` asked for.
Then five runs of concurrency 32 against two native workers, each worker's share of the requests
read from `/metrics` (label `worker`); in-process `parse_batch` on 32-row calls as the ceiling; and
a corpus of ``--lines`` lines through `parse --ray --actors 1` and `parse -` in one process. Writes
scale-<time>.json and .md.
"""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent))
from serve_load import MODES, Server, drive, run, sample_bodies

from mtop_edge.bench.stats import percentile

ROOT = Path(__file__).resolve().parents[1]
CONCURRENCY = (1, 8, 32)
RAY = str(Path(sys.executable).parent / "ray")  # the cluster a run started is stopped after it


class RayServer(Server):
    """`mtop-edge serve --ray` (its readiness deadline is Ray's start-up); its cluster is stopped after."""

    def __init__(self, args: list[str]) -> None:
        super().__init__(["--ray", *args], start_seconds=180)

    def stop(self) -> int:
        code = super().stop()
        subprocess.run([RAY, "stop", "--force"], check=False, capture_output=True)
        return code


def load_rows(server: Server, label: str, bodies: list[bytes], seconds: float) -> list[dict]:
    """One row per concurrency after a warm-up."""
    run(drive(server.url, bodies[:100], 8, 60))
    rows = []
    for concurrency in CONCURRENCY:
        latencies, statuses, elapsed = run(drive(server.url, bodies, concurrency, seconds))
        done = [(ms, s) for ms, s in zip(latencies, statuses, strict=True) if s is not None]
        row = {
            "server": label,
            "concurrency": concurrency,
            "requests": len(done),
            "non_200": sum(s != 200 for _, s in done),
            "utterances_per_s": round(len(done) / elapsed, 1),
            "p50_ms": round(percentile([ms for ms, _ in done], 0.5), 2),
            "p99_ms": round(percentile([ms for ms, _ in done], 0.99), 2),
        }
        print(json.dumps(row), flush=True)
        rows.append(row)
    return rows


def worker_shares(url: str) -> dict[str, int]:
    """Requests to /v1/parse answered 200, per worker, from the Prometheus text."""
    text = httpx.get(url + "/metrics", timeout=10).text
    counts: dict[str, int] = {}
    pattern = r"mtop_edge_requests_total\{([^}]*)\} ([0-9.e+]+)"
    for labels, value in re.findall(pattern, text):
        fields = dict(re.findall(r'(\w+)="([^"]*)"', labels))
        if fields.get("route") == "/v1/parse" and fields.get("status") == "200":
            counts[fields["worker"]] = counts.get(fields["worker"], 0) + int(float(value))
    return counts


def balance(model_args: list[str], bodies: list[bytes], seconds: float, runs: int = 5) -> list[dict]:
    """``runs`` fresh two-worker servers, concurrency 32 each: throughput and each worker's share."""
    rows = []
    for index in range(runs):
        server = Server(["--workers", "2", *model_args, *MODES["batching on"]])
        try:
            run(drive(server.url, bodies[:100], 8, 60))
            before = worker_shares(server.url)
            _, statuses, elapsed = run(drive(server.url, bodies, 32, seconds))
            after = worker_shares(server.url)
        finally:
            server.stop()
        served = {w: after.get(w, 0) - before.get(w, 0) for w in after}
        total = sum(served.values()) or 1
        row = {
            "run": index + 1,
            "utterances_per_s": round(sum(s is not None for s in statuses) / elapsed, 1),
            "shares": {w: round(n / total, 3) for w, n in sorted(served.items())},
        }
        print(json.dumps(row), flush=True)
        rows.append(row)
    return rows


def in_process_batch32(model: str | None, utterances: list[str]) -> float:
    from mtop_edge.runtime import Parser, share_thread_pool

    parser = Parser.load(model, threads=1, pool=share_thread_pool(1))
    calls = [utterances[i : i + 32] for i in range(0, len(utterances) - 31, 32)]
    parser.parse_batch(calls[0])
    begin = time.perf_counter()
    for _ in range(3):
        for call in calls:
            parser.parse_batch(call)
    return round(3 * 32 * len(calls) / (time.perf_counter() - begin), 1)


def corpus(model: str | None, utterances: list[str], lines: int) -> dict:
    """The same ``lines``-line file through `parse -` (one process, one thread) and `parse --ray` (one actor)."""
    model_args = ["--model", model] if model else []
    with tempfile.TemporaryDirectory() as scratch:
        source = Path(scratch) / "corpus.txt"
        source.write_text("".join(utterances[i % len(utterances)] + "\n" for i in range(lines)))
        begin = time.perf_counter()
        with source.open() as handle:
            subprocess.run(
                [sys.executable, "-m", "mtop_edge", "parse", *model_args, "--threads", "1", "-"],
                stdin=handle,
                stdout=subprocess.DEVNULL,
                check=True,
            )
        streamed = time.perf_counter() - begin
        begin = time.perf_counter()
        ray = [sys.executable, "-m", "mtop_edge", "parse", *model_args, "--ray", str(source), "--actors", "1"]
        subprocess.run([*ray, "--output", str(Path(scratch) / "out")], capture_output=True, check=True)
        on_ray = time.perf_counter() - begin
        subprocess.run([RAY, "stop", "--force"], check=False, capture_output=True)
    return {
        "lines": lines,
        "parse_stdin_lines_per_s": round(lines / streamed, 1),
        "ray_data_lines_per_s": round(lines / on_ray, 1),
        "ray_data_share": round(streamed / on_ray, 3),
    }


def main() -> None:
    arguments = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    arguments.add_argument("--model", help="model directory [default: the embedded model]")
    arguments.add_argument("--requests", type=int, default=600, help="requests per setting")
    arguments.add_argument("--seconds", type=float, default=60, help="time cap per setting")
    arguments.add_argument("--lines", type=int, default=20000, help="corpus lines (0 skips)")
    arguments.add_argument("--ingress", default="haproxy", help="serve --ray --ingress values, comma-separated")
    arguments.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results")
    args = arguments.parse_args()

    utterances, bodies = sample_bodies(args.requests)
    model_args = ["--threads", "1", *(["--model", args.model] if args.model else [])]
    result: dict = {"created": time.strftime("%Y-%m-%dT%H:%M:%S"), "rows": []}
    result["in_process_batch32_utt_per_s"] = in_process_batch32(args.model, utterances)
    print(f"in-process parse_batch, 32-row calls, 1 thread: {result['in_process_batch32_utt_per_s']} utt/s")
    for workers in (1, 2):
        server = Server(["--workers", str(workers), *model_args, *MODES["batching on"]])
        try:
            result["rows"] += load_rows(server, f"native, {workers} worker(s)", bodies, args.seconds)
        finally:
            server.stop()
    for ingress in args.ingress.split(","):
        for replicas in (1, 2):
            server = RayServer(["--ingress", ingress, "--replicas", str(replicas), *model_args, "--max-batch", "32"])
            try:
                label = f"Ray Serve ({ingress}), {replicas} replica(s)"
                result["rows"] += load_rows(server, label, bodies, args.seconds)
            finally:
                server.stop()
    result["balance"] = balance(model_args, bodies, args.seconds)
    if args.lines:
        result["corpus"] = corpus(args.model, utterances, args.lines)
        print(json.dumps(result["corpus"]), flush=True)
    write(result, args.out)


def write(result: dict, out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    stem = out / f"scale-{result['created'].replace('-', '').replace(':', '')}"
    stem.with_suffix(".json").write_text(json.dumps(result, indent=1) + "\n")
    keys = ("server", "concurrency", "requests", "utterances_per_s", "p50_ms", "p99_ms", "non_200")
    lines = [
        f"Run {result['created']}; in-process `parse_batch` in 32-row calls, one thread: "
        f"{result['in_process_batch32_utt_per_s']} utt/s.",
        "",
        "| server | concurrency | requests | utt/s | p50 ms | p99 ms | non-200 |",
        "|---|---|---|---|---|---|---|",
        *("| " + " | ".join(str(r[k]) for k in keys) + " |" for r in result["rows"]),
        "",
        "| two workers, concurrency 32: run | utt/s | share per worker |",
        "|---|---|---|",
        *(f"| {b['run']} | {b['utterances_per_s']} | {b['shares']} |" for b in result["balance"]),
    ]
    if "corpus" in result:
        lines += ["", "Corpus: " + ", ".join(f"{k} {v}" for k, v in result["corpus"].items())]
    stem.with_suffix(".md").write_text("\n".join(lines) + "\n")
    print(f"wrote {stem}.json, .md")


if __name__ == "__main__":
    main()
