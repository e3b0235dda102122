"""Hugging Face ``tokenizer.json`` files, read with the ``tokenizers`` library (no transformers)."""

from __future__ import annotations

from pathlib import Path

from mtop_edge.errors import ModelError


def load_tokenizer(path: str | Path):
    """A fast tokenizer from its ``tokenizer.json``, naming the file if it is missing or corrupt."""
    from tokenizers import Tokenizer

    path = Path(path)
    if not path.is_file():
        raise ModelError(f"{path}: missing tokenizer")
    try:
        return Tokenizer.from_file(str(path))
    except Exception as exc:  # the Rust library raises a plain Exception for every parse error
        raise ModelError(f"{path}: corrupt tokenizer ({str(exc).splitlines()[0] if str(exc) else exc})") from None
