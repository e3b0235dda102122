"""Checkpoint formats: ours (``pointer.json`` beside the weights) and checkpoints trained elsewhere."""

from __future__ import annotations

from pathlib import Path

from mtop_edge.core.spec import SPEC_FILE, PointerSpec
from mtop_edge.errors import ModelError
from mtop_edge.formats import damp


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
        f"({damp.TOKENIZER_FILE} with <pt-N> added tokens)"
    )
