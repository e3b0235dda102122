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
