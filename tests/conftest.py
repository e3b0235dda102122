"""Shared fixtures. Everything is built locally: no hub downloads, no ../shared data."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from mtop_edge.data import SAMPLES, read_examples

DATA = Path(__file__).resolve().parent / "data"


@pytest.fixture(scope="session")
def train_sample():
    return read_examples(SAMPLES / "train_sample.jsonl")


@pytest.fixture(scope="session")
def eval_sample():
    return read_examples(SAMPLES / "eval_sample.jsonl")


TINY_RECIPE = DATA / "tiny.toml"


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory):
    """A tiny parser trained from scratch on the train sample (about 20 s on two cores)."""
    from mtop_edge.training.recipe import Recipe
    from mtop_edge.training.train import train

    out = tmp_path_factory.mktemp("tiny") / "model"
    summary = train(Recipe.load(TINY_RECIPE), SAMPLES / "train_sample.jsonl", out)
    return out, summary


def export_tiny(tiny_model, out, **options):
    """Export the tiny trained model with the given option overrides; returns the manifest."""
    from mtop_edge.export import export_model
    from mtop_edge.export.options import ExportOptions

    checkpoint, _ = tiny_model
    settings = {"parity_rows": 60, **options}
    return export_model(str(checkpoint), out, ExportOptions.load(None, **settings), log=lambda _: None)


@pytest.fixture(scope="session")
def tiny_export(tiny_model, tmp_path_factory):
    """The tiny model exported as the runtime's default profile (trimmed, int8)."""
    out = tmp_path_factory.mktemp("export") / "int8"
    return out, export_tiny(tiny_model, out)


@pytest.fixture(scope="session")
def tiny_export_fp32(tiny_model, tmp_path_factory):
    out = tmp_path_factory.mktemp("export") / "fp32"
    return out, export_tiny(tiny_model, out, quantize="none")


@pytest.fixture(scope="session")
def tiny_pointer_model(tmp_path_factory):
    """The tiny recipe with the pointer head (points by content), trained on the train sample."""
    from mtop_edge.training.recipe import Recipe
    from mtop_edge.training.train import train

    out = tmp_path_factory.mktemp("tiny-pointer") / "model"
    summary = train(Recipe.load(TINY_RECIPE, pointing="head"), SAMPLES / "train_sample.jsonl", out)
    return out, summary


@pytest.fixture(scope="session")
def tiny_pointer_export_fp32(tiny_pointer_model, tmp_path_factory):
    out = tmp_path_factory.mktemp("export") / "pointer-fp32"
    return out, export_tiny(tiny_pointer_model, out, quantize="none")


def small_bench(model: Path, tmp_path: Path, **settings):
    """BenchOptions for a bench run in seconds: one model, no reference shape, 1 thread, a few rows."""
    from mtop_edge.bench import BenchOptions

    defaults = {
        "models": [model],
        "reference_shape": False,
        "threads": [1],
        "batch_sizes": [1],
        "rows": 4,
        "throughput_rows": 8,
        "warmup": 1,
        "out": tmp_path / "results",
        "work": tmp_path / "work",
    }
    return BenchOptions(**{**defaults, **settings})


def parse_command(*args, input=None):
    """`mtop-edge parse ARGS` in-process (click's CliRunner)."""
    from click.testing import CliRunner

    from mtop_edge.cli import cli

    return CliRunner().invoke(cli, ["parse", *args], input=input)


def distinct_words(count: int) -> list[str]:
    """``count`` different words, each one word to every splitter (letters only)."""
    return ["".join(chr(97 + (i // 26**k) % 26) for k in range(3)) + "z" for i in range(count)]


ENCODER_POINTER_RECIPE = DATA / "tiny-encoder-pointer.toml"


@pytest.fixture(scope="session")
def tiny_bert(tmp_path_factory):
    """A tiny BERT encoder directory (random weights, WordPiece trained on the train sample)."""
    from tests.tiny_bert import build

    utterances = [e.utterance for e in read_examples(SAMPLES / "train_sample.jsonl")]
    return build(tmp_path_factory.mktemp("tiny-bert") / "encoder", utterances)


@pytest.fixture(scope="session")
def tiny_encoder_pointer_model(tiny_bert, tmp_path_factory):
    """The encoder-pointer kind on the tiny BERT, trained on the train sample."""
    from mtop_edge.training.recipe import Recipe
    from mtop_edge.training.train import train

    out = tmp_path_factory.mktemp("tiny-encoder-pointer") / "model"
    summary = train(Recipe.load(ENCODER_POINTER_RECIPE, encoder=str(tiny_bert)), SAMPLES / "train_sample.jsonl", out)
    return out, summary


@pytest.fixture(scope="session")
def tiny_encoder_pointer_export(tiny_encoder_pointer_model, tmp_path_factory):
    """The tiny encoder-pointer model exported with the default profile (int8)."""
    out = tmp_path_factory.mktemp("export") / "encoder-pointer-int8"
    return out, export_tiny(tiny_encoder_pointer_model, out)


@pytest.fixture(scope="session")
def tiny_encoder_pointer_export_fp32(tiny_encoder_pointer_model, tmp_path_factory):
    out = tmp_path_factory.mktemp("export") / "encoder-pointer-fp32"
    return out, export_tiny(tiny_encoder_pointer_model, out, quantize="none")


# -- a real server (`mtop-edge serve` in a subprocess) ---------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    """`mtop-edge serve` in a subprocess; stopped with SIGTERM."""

    def __init__(self, *args: str, model: Path | None = None) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        command = [sys.executable, "-m", "mtop_edge", "serve", "--port", str(self.port), "--threads", "1", *args]
        if model is not None:
            command += ["--model", str(model)]
        self.process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        deadline = time.time() + 60
        while time.time() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"server exited: {self.process.stdout.read()}")
            try:
                if httpx.get(self.url + "/readyz", timeout=1).status_code == 200:
                    return
            except httpx.HTTPError:
                time.sleep(0.1)
        raise RuntimeError("server did not become ready")

    def stop(self) -> bool:
        """SIGTERM; True when the server shut down by itself (uvicorn re-raises the signal after a
        graceful shutdown, so the exit status is -SIGTERM) and printed no traceback."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        code = self.process.wait(timeout=60)
        return code in (0, -signal.SIGTERM) and "Traceback" not in self.process.stdout.read()

    def rss_kb(self) -> int:
        for line in Path(f"/proc/{self.process.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
        return 0


@pytest.fixture(scope="session")
def fp32_server(tiny_export_fp32):
    # fp32: results do not depend on which requests share a batch (int8's dynamic activation scales do)
    server = Server("--max-wait-ms", "20", "--max-items", "8", "--max-body-bytes", "4096", model=tiny_export_fp32[0])
    yield server
    assert server.stop()


@pytest.fixture(scope="session")
def ray_cluster():
    """One local two-CPU Ray cluster for every Ray test (CI pays its start once), with the HAProxy
    ingress that `serve --ray` starts by default. The Data and the Serve tests live in separate
    modules so that the Serve replicas (one CPU each) are gone before the Data actors ask for theirs."""
    from mtop_edge.choices import RayIngress
    from mtop_edge.serve.ray_ingress import ingress_environment

    saved = dict(os.environ)
    os.environ.update(ingress_environment(RayIngress.HAPROXY))  # `serve --ray`'s default, before Ray reads it
    os.environ["RAY_SERVE_DIRECT_INGRESS_MIN_DRAINING_PERIOD_S"] = "1"  # a deleted replica drains 30 s otherwise
    ray = pytest.importorskip("ray")
    ray.init(num_cpus=2, include_dashboard=False, logging_level="ERROR", log_to_driver=False)
    yield ray
    from ray import serve

    serve.shutdown()
    ray.shutdown()
    os.environ.clear()
    os.environ.update(saved)


def process_commands() -> dict[int, list[bytes]]:
    """Every process's argv as /proc shows it (``ps`` lists no Ray process in this sandbox)."""
    commands = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                commands[int(entry.name)] = (entry / "cmdline").read_bytes().split(b"\0")
            except OSError:
                continue
    return commands


def ray_worker_pids(fragment: str) -> list[int]:
    """Processes whose title (``ray::ClassName...``, set by Ray) contains ``fragment``: the Ray
    actors to kill, found without Ray's state API (which needs the dashboard the tests leave off)."""
    pids = []
    for pid, command in process_commands().items():
        title = b" ".join(command).decode(errors="replace")
        if title.startswith("ray::") and fragment in title:
            pids.append(pid)
    return sorted(pids)
