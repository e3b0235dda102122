"""The checkpoint an export starts from: found (a directory or a hub id), hashed, read once."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

from mtop_edge.core.source import SourceEncoder
from mtop_edge.core.spec import PointerSpec
from mtop_edge.data import read_examples
from mtop_edge.errors import ModelError, MtopEdgeError
from mtop_edge.formats import checkpoint_spec, load_source
from mtop_edge.modeling import ENCODER_POINTER_TYPE

SOURCE_VOCAB_FILE = "source_vocab.json"
WEIGHT_PATTERNS = ("*.safetensors", "pytorch_model*.bin")


def resolve_checkpoint(name: str) -> Path:
    """A local checkpoint directory, or a hub id downloaded into the Hugging Face cache.

    Raises:
        ModelError: neither a directory nor a downloadable hub id.
    """
    path = Path(name)
    if path.is_dir():
        return path
    if path.exists() or name.count("/") != 1 or name.startswith((".", "/")):
        raise ModelError(f"{name}: not a checkpoint directory (nor a hub id like org/name)")
    from huggingface_hub import snapshot_download

    try:
        return Path(snapshot_download(repo_id=name))
    except Exception as exc:  # offline, unknown repo, auth: all mean "cannot get it"
        raise ModelError(f"{name}: cannot download from the Hugging Face hub ({type(exc).__name__}: {exc})") from None


def checkpoint_hash(directory: Path) -> str:
    """sha256 of the checkpoint's weights: of the one weight file (what `sha256sum` prints), or for a
    sharded checkpoint over its files in name order, each preceded by its name."""
    files = sorted({p for pattern in WEIGHT_PATTERNS for p in directory.glob(pattern)})
    if not files:
        raise ModelError(f"{directory}: no weight file (model.safetensors or pytorch_model.bin)")
    digest = hashlib.sha256()
    for path in files:
        if len(files) > 1:
            digest.update(path.name.encode())
        with path.open("rb") as handle:
            for block in iter(lambda: handle.read(1 << 20), b""):
                digest.update(block)
    return digest.hexdigest()


@dataclass
class Checkpoint:
    """What an export reads from its checkpoint, each thing once."""

    name: str  # as the user named it (a directory or a hub id)
    path: Path
    spec: PointerSpec
    source: SourceEncoder
    sha256: str
    encoder_pointer: bool  # the kind: an encoder-pointer model, else a T5 (plain or with the pointer head)

    @classmethod
    def open(cls, name: str) -> Checkpoint:
        """Raises ModelError for a missing, incomplete or corrupt checkpoint (the file is named)."""
        from mtop_edge.modeling.torch_engine import checkpoint_model_type

        path = resolve_checkpoint(name)
        spec = checkpoint_spec(path)
        return cls(
            name=name,
            path=path,
            spec=spec,
            source=load_source(path, spec),
            sha256=checkpoint_hash(path),
            encoder_pointer=checkpoint_model_type(path) == ENCODER_POINTER_TYPE,
        )

    @property
    def tokenizer_file(self) -> Path:
        """The source tokenizer the runtime reads (spiece.model or tokenizer.json)."""
        return self.path / self.spec.tokenizer

    def seen_source_ids(self, data: Path | None) -> list[int]:
        """Source ids seen in training: recorded by `mtop-edge train`, or computed from ``data``."""
        if data is None:
            recorded = self.path / SOURCE_VOCAB_FILE
            if not recorded.is_file():
                raise MtopEdgeError(
                    f"--trim-input: {recorded} is missing; pass --trim-input-data with the training rows"
                )
            return json.loads(recorded.read_text())
        seen: set[int] = set()
        for example in read_examples(data):
            try:
                seen.update(self.source.prepare(example.utterance).ids)
            except MtopEdgeError:
                continue
        return sorted(seen)
