"""Load benchmark of `mtop-edge serve` on loopback: throughput and latency by concurrency, batching on
and off, plus a soak with malformed requests. Bounded in count and time; stops by itself.

    python benchmarks/serve_load.py [--model DIR] [--requests 600] [--soak 10000] [--out benchmarks/results]

Each setting starts a fresh server (`--workers` processes of `--threads` onnxruntime threads) on a
free 127.0.0.1 port; the client (a lean keep-alive HTTP/1.1 client on uvloop) runs on the same
machine. Utterances are MTOP eval rows from the in-repo sample, one per request. Writes serve-<time>.json, .md and .png.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import signal
import socket
import statistics
import subprocess
import sys
import time
from pathlib import Path

import httpx

from mtop_edge.bench.stats import percentile
from mtop_edge.data import EVAL_SAMPLE

ROOT = Path(__file__).resolve().parents[1]
SAMPLE = EVAL_SAMPLE
MODES = {  # "batching on" is the server's default; the soak runs it on one worker
    "batching on": ["--max-batch", "32", "--max-wait-ms", "0"],
    "batching off": ["--max-batch", "1", "--max-wait-ms", "0"],
}


class Server:
    """`mtop-edge serve ARGS` on a free 127.0.0.1 port, ready within ``start_seconds``."""

    def __init__(self, args: list[str], start_seconds: float = 60) -> None:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self.process = subprocess.Popen(
            [sys.executable, "-m", "mtop_edge", "serve", "--port", str(self.port), "--max-queue", "100000", *args],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.time() + start_seconds
        while time.time() < deadline:
            try:
                if httpx.get(self.url + "/readyz", timeout=1).status_code == 200:
                    return
            except httpx.HTTPError:
                time.sleep(0.1)
        self.process.kill()
        raise RuntimeError("server did not start")

    def rss_mb(self) -> float:
        for line in Path(f"/proc/{self.process.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
        return float("nan")

    def stop(self) -> int:
        self.process.send_signal(signal.SIGTERM)
        return self.process.wait(timeout=60)


class Connection:
    """One keep-alive HTTP/1.1 connection that POSTs JSON bodies: the load client's only work.

    A general client (httpx) spent 1.2-3.8 ms of CPU per request here, as much as the server at
    concurrency 32, on the same two cores; this reads the status line, the headers and exactly
    Content-Length bytes, and nothing else.
    """

    def __init__(self, host: str, port: int) -> None:
        self.host, self.port = host, port
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None

    async def post(self, path: str, body: bytes) -> int:
        """The response's status code (its body is read and dropped)."""
        if self.writer is None:
            self.reader, self.writer = await asyncio.open_connection(self.host, self.port)
        head = (
            f"POST {path} HTTP/1.1\r\nHost: {self.host}\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(body)}\r\n\r\n"
        )
        self.writer.write(head.encode() + body)
        status = int((await self.reader.readline()).split()[1])
        length, close = 0, False
        while (line := await self.reader.readline()) not in (b"\r\n", b""):
            name, _, value = line.partition(b":")
            name = name.strip().lower()
            if name == b"content-length":
                length = int(value)
            elif name == b"connection" and value.strip().lower() == b"close":
                close = True
        await self.reader.readexactly(length)
        if close:
            self.close()
        return status

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
            self.reader = self.writer = None


def run(coroutine):
    """Run on uvloop where installed (the serve extra brings it), as the server does."""
    try:
        import uvloop
    except ImportError:
        return asyncio.run(coroutine)
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        return runner.run(coroutine)


async def drive(
    url: str, bodies: list[bytes], concurrency: int, deadline_s: float
) -> tuple[list[float | None], list[int | None], float]:
    """Send ``bodies`` from ``concurrency`` sequential clients, one connection each; per body (in
    order) its latency (ms) and status (None if the time cap came first), and the elapsed seconds."""
    host, port = url.removeprefix("http://").split(":")
    latencies: list[float | None] = [None] * len(bodies)
    statuses: list[int | None] = [None] * len(bodies)
    order = iter(range(len(bodies)))
    stop_at = time.perf_counter() + deadline_s

    async def worker() -> None:
        connection = Connection(host, int(port))
        try:
            for index in order:
                if time.perf_counter() >= stop_at:
                    return
                begin = time.perf_counter()
                statuses[index] = await connection.post("/v1/parse", bodies[index])
                latencies[index] = (time.perf_counter() - begin) * 1000
        finally:
            connection.close()

    started = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return latencies, statuses, time.perf_counter() - started


def sample_bodies(requests: int) -> tuple[list[str], list[bytes]]:
    """The in-repo eval sample's utterances, and ``requests`` single-utterance request bodies of them."""
    utterances = [json.loads(line)["utterance"] for line in SAMPLE.read_text().splitlines()]
    return utterances, [json.dumps({"utterance": utterances[i % len(utterances)]}).encode() for i in range(requests)]


def in_process_p50(model: str | None, threads: int, utterances: list[str]) -> float:
    from mtop_edge.runtime import Parser, share_thread_pool

    pool = share_thread_pool(threads)  # as the server does (this process runs no other onnxruntime session)
    parser = Parser.load(model, threads=threads, pool=pool)
    for u in utterances[:10]:
        parser.parse(u)
    times = []
    for u in utterances[:200]:
        begin = time.perf_counter()
        parser.parse(u)
        times.append((time.perf_counter() - begin) * 1000)
    return statistics.median(times)


def main() -> None:
    arguments = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    arguments.add_argument("--model", help="model directory [default: the embedded model]")
    arguments.add_argument("--threads", type=int, default=1, help="server onnxruntime threads")
    arguments.add_argument("--workers", default="1,2", help="server processes to measure (one setting each)")
    arguments.add_argument("--concurrency", default="1,8,32")
    arguments.add_argument("--requests", type=int, default=600, help="requests per setting")
    arguments.add_argument("--seconds", type=float, default=60, help="time cap per setting")
    arguments.add_argument("--soak", type=int, default=10000, help="soak requests (10%% malformed); 0 skips")
    arguments.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results")
    args = arguments.parse_args()

    utterances, bodies = sample_bodies(args.requests)
    model_args = ["--threads", str(args.threads), *(["--model", args.model] if args.model else [])]
    result: dict = {"created": time.strftime("%Y-%m-%dT%H:%M:%S"), "threads": args.threads, "rows": []}
    result["in_process_p50_ms"] = round(in_process_p50(args.model, args.threads, utterances), 3)
    print(f"in-process Parser.parse batch-1 p50: {result['in_process_p50_ms']} ms", flush=True)
    for workers in [int(w) for w in args.workers.split(",")]:
        for mode in MODES:
            result["rows"] += measure(workers, mode, model_args, bodies, args)
    for line in target_ratios(result):
        print(line, flush=True)
    if args.soak:
        result["soak"] = soak(model_args, utterances, args.soak)
        print(json.dumps(result["soak"]), flush=True)
    write(result, args.out)


def measure(
    workers: int, mode: str, model_args: list[str], bodies: list[bytes], args: argparse.Namespace
) -> list[dict]:
    """One fresh server (``workers`` processes, batching ``mode``), warmed up, then one row per concurrency."""
    server = Server(["--workers", str(workers), *model_args, *MODES[mode]])
    rows = []
    try:
        run(drive(server.url, bodies[:100], 8, 30))  # warm-up, every worker
        for concurrency in [int(c) for c in args.concurrency.split(",")]:
            latencies, statuses, elapsed = run(drive(server.url, bodies, concurrency, args.seconds))
            done = [(ms, status) for ms, status in zip(latencies, statuses, strict=True) if status is not None]
            row = {
                "workers": workers,
                "mode": mode,
                "concurrency": concurrency,
                "requests": len(done),
                "non_200": sum(status != 200 for _, status in done),
                "utterances_per_s": round(len(done) / elapsed, 1),
                "p50_ms": round(percentile([ms for ms, _ in done], 0.5), 2),
                "p99_ms": round(percentile([ms for ms, _ in done], 0.99), 2),
            }
            rows.append(row)
            print(json.dumps(row), flush=True)
    finally:
        server.stop()
    return rows


def soak(model_args: list[str], utterances: list[str], count: int) -> dict:
    """``count`` requests at concurrency 8, every tenth malformed (bad JSON, empty, wrong type, bad UTF-8)."""
    malformed = [b"{oops", b'{"utterance": ""}', b'{"utterances": 5}', b'{"utterance": "\xff"}']
    rng = random.Random(0)
    bodies, bad = [], []
    for i in range(count):
        is_bad = i % 10 == 9
        bad.append(is_bad)
        bodies.append(rng.choice(malformed) if is_bad else json.dumps({"utterance": rng.choice(utterances)}).encode())
    server = Server([*model_args, *MODES["batching on"]])
    try:
        run(drive(server.url, bodies[:1000], 8, 120))  # warm-up: the memory baseline is the steady state
        rss = [round(server.rss_mb(), 1)]
        statuses: list[int | None] = []
        elapsed = 0.0
        for start in range(0, count, 2000):  # RSS after every 2,000 requests: growth or a plateau
            _, chunk, seconds = run(drive(server.url, bodies[start : start + 2000], 8, 600))
            statuses += chunk
            elapsed += seconds
            rss.append(round(server.rss_mb(), 1))
        healthy = httpx.get(server.url + "/healthz").status_code == 200
    finally:
        code = server.stop()
    good = [s for s, b in zip(statuses, bad, strict=True) if not b and s is not None]
    wrong = [s for s, b in zip(statuses, bad, strict=True) if b and s is not None]
    return {
        "requests": len(good) + len(wrong),
        "malformed": len(wrong),
        "good_not_200": sum(s != 200 for s in good),
        "malformed_not_4xx": sum(not 400 <= s < 500 for s in wrong),
        "status_5xx": sum(s >= 500 for s in good + wrong),
        "seconds": round(elapsed, 1),
        "rss_mb_every_2000": rss,
        "rss_growth": round(rss[-1] / rss[0] - 1, 4),
        "healthy_after": healthy,
        "exit_code_after_sigterm": code,
    }


def target_ratios(result: dict) -> list[str]:
    """Issue 13's two ratios for each worker count measured at concurrency 1, 8 and 32."""
    lines = []
    for workers in sorted({r["workers"] for r in result["rows"]}):
        row = {(r["mode"], r["concurrency"]): r for r in result["rows"] if r["workers"] == workers}
        if {("batching off", 1), ("batching on", 8), ("batching on", 32)} <= row.keys():
            sequential = row["batching off", 1]["utterances_per_s"]
            c32 = row["batching on", 32]["utterances_per_s"]
            p99 = row["batching on", 8]["p99_ms"]
            lines.append(
                f"{workers} worker(s): concurrency 32 with batching {c32} utt/s = {c32 / sequential:.2f}x sequential "
                f"batch-1 requests ({sequential}); concurrency 8 p99 {p99} ms = "
                f"{p99 / result['in_process_p50_ms']:.1f}x the in-process batch-1 p50"
            )
    return lines


def write(result: dict, out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    stem = out / f"serve-{result['created'].replace('-', '').replace(':', '')}"
    stem.with_suffix(".json").write_text(json.dumps(result, indent=1) + "\n")
    lines = [
        f"Run {result['created']}; server with {result['threads']} onnxruntime thread(s); in-process "
        f"`Parser.parse` batch-1 p50 {result['in_process_p50_ms']} ms.",
        "",
        "| workers | mode | concurrency | requests | utt/s | p50 ms | p99 ms | non-200 |",
        "|---|---|---|---|---|---|---|---|",
    ]
    keys = ("workers", "mode", "concurrency", "requests", "utterances_per_s", "p50_ms", "p99_ms", "non_200")
    lines += ["| " + " | ".join(str(r[k]) for k in keys) + " |" for r in result["rows"]]
    lines += ["", *(f"- {line}" for line in target_ratios(result))]
    if "soak" in result:
        lines += ["", "Soak: " + ", ".join(f"{k} {v}" for k, v in result["soak"].items())]
    stem.with_suffix(".md").write_text("\n".join(lines) + "\n")
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, (left, right) = plt.subplots(1, 2, figsize=(10, 4))
    for workers, mode in dict.fromkeys((r["workers"], r["mode"]) for r in result["rows"]):
        rows = [r for r in result["rows"] if (r["workers"], r["mode"]) == (workers, mode)]
        label = f"{workers} worker{'s' * (workers > 1)}, {mode}"
        left.plot([r["concurrency"] for r in rows], [r["utterances_per_s"] for r in rows], marker="o", label=label)
        right.plot([r["concurrency"] for r in rows], [r["p99_ms"] for r in rows], marker="o", label=label)
    left.set(xlabel="concurrent clients", ylabel="utterances/s", title="throughput", xscale="log")
    right.set(xlabel="concurrent clients", ylabel="ms", title="p99 latency", xscale="log", yscale="log")
    left.legend()
    figure.tight_layout()
    figure.savefig(stem.with_suffix(".png"), dpi=100)
    print(f"wrote {stem}.json, .md, .png")


if __name__ == "__main__":
    main()
