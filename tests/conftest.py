"""Shared fixtures. Everything is built locally: no hub downloads, no ../shared data."""

from __future__ import annotations

from pathlib import Path

import pytest

from mtop_edge.data import read_examples

SAMPLES = Path(__file__).resolve().parents[1] / "mtop_edge" / "samples"
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
    summary = train(Recipe.load(TINY_RECIPE, pointer_head=True), SAMPLES / "train_sample.jsonl", out)
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
