"""A benchmark worker: one engine in its own process, timing what the orchestrator asks it to run.

Its own process gives each engine its own thread settings and an honest peak resident memory.
Requests and replies are JSON lines on the original stdout; anything the libraries print goes
to stderr. `Worker` is the orchestrator's side, `main` the worker process's.
"""

from __future__ import annotations

import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

from mtop_edge.errors import MtopEdgeError


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

    def run(self, sources, n_words, word_starts, forced_steps) -> dict:
        request = {"sources": sources, "n_words": n_words, "word_starts": word_starts, "forced_steps": forced_steps}
        return self.ask({"op": "run", **request})

    def close(self) -> float:
        peak = self.ask({"op": "close"})["peak_rss_mb"]
        self.process.wait(timeout=60)
        return peak


def peak_rss_mb() -> float:
    """This process's peak resident memory (VmHWM: unlike ru_maxrss it is not inherited across exec)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # pragma: no cover - not Linux


def main() -> None:
    protocol = os.fdopen(os.dup(1), "w", buffering=1)
    os.dup2(2, 1)
    config = json.loads(sys.argv[1])
    from mtop_edge.bench.engines import load_engine
    from mtop_edge.formats import checkpoint_spec

    spec = checkpoint_spec(config["checkpoint"])
    pool = None
    if config["engine"].startswith("mtop-edge") and config["device"] == "cpu":
        from mtop_edge.runtime import share_thread_pool

        pool = share_thread_pool(config["threads"])  # this process runs the one engine: one pool for its sessions
    started = time.perf_counter()  # load time includes importing the engine's libraries, as a user's start does
    engine = load_engine(
        config["engine"], config["artifacts"], spec, threads=config["threads"], device=config["device"], pool=pool
    )
    protocol.write(json.dumps({"load_s": time.perf_counter() - started}) + "\n")
    for line in sys.stdin:
        request = json.loads(line)
        if request["op"] == "close":
            protocol.write(json.dumps({"peak_rss_mb": peak_rss_mb()}) + "\n")
            return
        begin = time.perf_counter()
        outputs = engine.run(request["sources"], request["n_words"], request["word_starts"], request["forced_steps"])
        seconds = time.perf_counter() - begin
        protocol.write(json.dumps({"seconds": seconds, "outputs": outputs}) + "\n")


if __name__ == "__main__":
    main()
