"""Checkpoint formats: ours (``pointer.json`` beside the weights) and checkpoints trained elsewhere,
and the source encoder each kind of model directory needs."""

from __future__ import annotations

from pathlib import Path

from mtop_edge.core.source import SentencePieces, SourceEncoder, load_sentencepiece
from mtop_edge.core.spec import SP_MODEL_FILE, SPEC_FILE, TOKENIZER_FILE, PointerSpec, SourceFormat
from mtop_edge.errors import ModelError
from mtop_edge.formats import damp
from mtop_edge.formats.tokenizer_json import load_tokenizer
from mtop_edge.formats.wordpiece import WordPieces


def checkpoint_spec(directory: str | Path) -> PointerSpec:
    """The pointer spec of a checkpoint: ``pointer.json`` (``mtop-edge train``), else derived from
    a DAMP-format tokenizer.

    Raises:
        ModelError: the directory is in neither format, or its files are corrupt (named).
    """
    directory = Path(directory)
    if (directory / SPEC_FILE).is_file():
        return PointerSpec.load(directory)
    if damp.is_damp_checkpoint(directory):
        return damp.derive_spec(directory)
    raise ModelError(
        f"{directory}: neither an mtop-edge checkpoint ({SPEC_FILE}) nor a DAMP pointer checkpoint "
        f"({TOKENIZER_FILE} with <pt-N> added tokens)"
    )


def load_source(directory: str | Path, spec: PointerSpec) -> SourceEncoder:
    """The source encoder for a model or checkpoint directory, by the spec's source format and word splitter.

    Raises:
        ModelError: the tokenizer file is missing or corrupt, or the spec names an unknown word splitter.
    """
    directory = Path(directory)
    if spec.words not in ("mtop-edge", damp.WORDS):
        raise ModelError(f"unknown word splitter {spec.words!r} in the pointer spec")
    split = damp.split_words if spec.words == damp.WORDS else None
    path = directory / spec.tokenizer
    if spec.source_format in (SourceFormat.PIECES, SourceFormat.MARKERS):
        pieces = SentencePieces(load_sentencepiece(directory / SP_MODEL_FILE), spec)
    elif spec.source_format is SourceFormat.SPACED:
        pieces = damp.SpacedPieces(load_tokenizer(path), spec)
    else:
        pieces = WordPieces(load_tokenizer(path))
    return SourceEncoder(spec, pieces) if split is None else SourceEncoder(spec, pieces, split)
