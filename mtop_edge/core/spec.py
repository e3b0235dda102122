"""The pointer spec: everything decoding needs besides the weights.

Training writes it as ``pointer.json`` beside the checkpoint; export carries it into the model
directory's ``manifest.json``. The runtime, the PyTorch evaluator and the exporter all read it
from here, so source formatting and target ids are defined in one place.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path

from mtop_edge.core.forms import Intent
from mtop_edge.core.pointer import Word, from_pointer_tokens
from mtop_edge.core.vocab import TargetVocab
from mtop_edge.errors import FormError, ModelError

FORMAT_VERSION = 1
SPEC_FILE = "pointer.json"
SP_MODEL_FILE = "spiece.model"
TOKENIZER_FILE = "tokenizer.json"  # a Hugging Face fast tokenizer (the ``tokenizers`` library reads it)


class SourceFormat(str, Enum):
    """How an utterance's words become encoder ids (``core/source.py`` and ``formats/`` implement each)."""

    PIECES = "pieces"  # sentencepiece over the utterance, EOS appended
    MARKERS = "markers"  # sentencepiece, each word preceded by its pointer token: @ptr0 set @ptr1 an ...
    SPACED = "spaced"  # tokenizer.json over ``source_prefix`` + the words joined by spaces (DAMP checkpoints)
    WORD_PIECES = "word-pieces"  # tokenizer.json WordPiece: [CLS] each word's pieces [SEP]; words = first pieces


@dataclass(frozen=True)
class PointerSpec:
    """Target symbols and their model ids, special ids, and how the source is formatted.

    ``source_format`` says how words become encoder ids (`SourceFormat`): with ``markers`` each
    word is preceded by its pointer token (``@ptr0 set @ptr1 an``), which lets a model trained from
    scratch point by matching embeddings instead of counting words; with ``word-pieces`` (pretrained
    BERT-family encoders) the encoder also takes each word's first-piece position.

    Checkpoints trained elsewhere (the DAMP format, see ``formats/damp.py``) differ in four ways,
    each recorded here: ``words`` names the word splitter (``mtop-edge`` or ``damp``), ``tokenizer``
    the source tokenizer (``spiece.model``, or the checkpoint's ``tokenizer.json`` when its
    pre-tokenization differs from plain sentencepiece), ``source_prefix`` is put before the words,
    and ``separator_id`` (the piece of a space, ``▁``) sits before every target symbol but the first,
    except ``]`` when its own piece carries the space (``▁]``; else ``close_needs_separator``).
    ``source_pad_id`` pads encoder inputs when the source vocabulary is not the target's (None:
    ``pad_id``, as in T5, whose source and target share one vocabulary).
    """

    vocab: TargetVocab
    symbol_ids: tuple[int, ...]
    pad_id: int = 0
    eos_id: int = 1
    unk_id: int = 2
    decoder_start_id: int = 0
    source_format: SourceFormat = SourceFormat.PIECES
    max_source_tokens: int = 256
    max_target_tokens: int = 64
    words: str = "mtop-edge"
    tokenizer: str = SP_MODEL_FILE
    source_prefix: str = ""
    separator_id: int | None = None
    close_needs_separator: bool = False
    source_pad_id: int | None = None
    symbols: tuple[str, ...] = field(init=False, repr=False, compare=False)
    _symbol_of_id: dict[int, str] = field(init=False, repr=False, compare=False)
    _id_of_symbol: dict[str, int] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        symbols = tuple(self.vocab.symbols)
        if len(symbols) != len(self.symbol_ids):
            raise ModelError(f"pointer spec lists {len(symbols)} symbols but {len(self.symbol_ids)} ids")
        object.__setattr__(self, "symbols", symbols)
        object.__setattr__(self, "_symbol_of_id", dict(zip(self.symbol_ids, symbols, strict=True)))
        object.__setattr__(self, "_id_of_symbol", dict(zip(symbols, self.symbol_ids, strict=True)))
        object.__setattr__(self, "source_format", SourceFormat(self.source_format))

    @property
    def markers(self) -> bool:
        """Each source word is preceded by its pointer token (`SourceFormat.MARKERS`)."""
        return self.source_format is SourceFormat.MARKERS

    @property
    def source_pad(self) -> int:
        """The id that pads encoder inputs."""
        return self.pad_id if self.source_pad_id is None else self.source_pad_id

    @property
    def pointer_ids(self) -> tuple[int, ...]:
        """Model ids of @ptr0, @ptr1, ... in index order."""
        return self.symbol_ids[len(self.symbols) - self.vocab.max_pointers :]

    def decoder_vocabulary(self) -> list[int]:
        """Every id a decoder step can need: decoder start, EOS, PAD, then the target symbols.

        The trimmed export keeps exactly these rows, in this order.
        """
        separator = [] if self.separator_id is None else [self.separator_id]
        return list(dict.fromkeys([self.decoder_start_id, self.eos_id, self.pad_id, *separator, *self.symbol_ids]))

    def target_ids(self, tokens: Sequence[str]) -> list[int]:
        """Pointer-target tokens -> model ids, EOS appended (separators between symbols where the model has them)."""
        ids = [self._id_of_symbol[t] for t in tokens]
        if self.separator_id is not None:
            raise ModelError("target ids with separators are made by the checkpoint's own tokenizer, not here")
        return [*ids, self.eos_id]

    def symbol(self, token_id: int) -> str | None:
        """The target symbol of a model id; None for a separator, EOS, PAD or an unknown id."""
        return self._symbol_of_id.get(int(token_id))

    def decode(self, ids: Sequence[int], utterance: str, words: Sequence[Word]) -> Intent:
        """Generated ids (without the decoder start; anything after EOS ignored) -> tree.

        Raises:
            FormError: the ids are not a well-formed pointer tree (an unknown id, PAD or the decoder
            start included, reads as ``<id N>`` and fails there).
        """
        tokens = []
        for token_id in ids:
            if token_id == self.eos_id:
                break
            if token_id == self.separator_id:
                continue
            tokens.append(self._symbol_of_id.get(int(token_id), f"<id {token_id}>"))
        return from_pointer_tokens(tokens, utterance, words)

    def try_decode(self, ids: Sequence[int], utterance: str, words: Sequence[Word]) -> Intent | None:
        """Like decode, but None where the ids are not a well-formed tree (what metrics score as a miss)."""
        try:
            return self.decode(ids, utterance, words)
        except FormError:
            return None

    def to_json(self) -> dict:
        return {
            "format_version": FORMAT_VERSION,
            "vocab": self.vocab.to_json(),
            "symbol_ids": list(self.symbol_ids),
            "pad_id": self.pad_id,
            "eos_id": self.eos_id,
            "unk_id": self.unk_id,
            "decoder_start_id": self.decoder_start_id,
            "source_format": self.source_format.value,
            "max_source_tokens": self.max_source_tokens,
            "max_target_tokens": self.max_target_tokens,
            "words": self.words,
            "tokenizer": self.tokenizer,
            "source_prefix": self.source_prefix,
            "separator_id": self.separator_id,
            "close_needs_separator": self.close_needs_separator,
            "source_pad_id": self.source_pad_id,
        }

    @classmethod
    def from_json(cls, data: dict) -> PointerSpec:
        version = data.get("format_version")
        if version != FORMAT_VERSION:
            raise ModelError(f"pointer spec format {version!r} is not supported (expected {FORMAT_VERSION})")
        return cls(
            vocab=TargetVocab.from_json(data["vocab"]),
            symbol_ids=tuple(int(i) for i in data["symbol_ids"]),
            pad_id=int(data["pad_id"]),
            eos_id=int(data["eos_id"]),
            unk_id=int(data["unk_id"]),
            decoder_start_id=int(data["decoder_start_id"]),
            source_format=_source_format(data),
            max_source_tokens=int(data["max_source_tokens"]),
            max_target_tokens=int(data["max_target_tokens"]),
            words=str(data.get("words", "mtop-edge")),
            tokenizer=str(data.get("tokenizer", SP_MODEL_FILE)),
            source_prefix=str(data.get("source_prefix", "")),
            separator_id=None if data.get("separator_id") is None else int(data["separator_id"]),
            close_needs_separator=bool(data.get("close_needs_separator", False)),
            source_pad_id=None if data.get("source_pad_id") is None else int(data["source_pad_id"]),
        )

    def save(self, directory: str | Path) -> Path:
        path = Path(directory) / SPEC_FILE
        path.write_text(json.dumps(self.to_json(), indent=1) + "\n")
        return path

    @classmethod
    def load(cls, directory: str | Path) -> PointerSpec:
        """Read ``pointer.json`` from a checkpoint directory.

        Raises:
            ModelError: the file is missing or corrupt (the message names it).
        """
        path = Path(directory) / SPEC_FILE
        try:
            return cls.from_json(json.loads(path.read_text()))
        except FileNotFoundError:
            raise ModelError(f"{path}: missing (is this a checkpoint written by `mtop-edge train`?)") from None
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise ModelError(f"{path}: corrupt pointer spec ({type(exc).__name__}: {exc})") from None


def _source_format(data: dict) -> SourceFormat:
    """The spec's source format; specs written before it existed say ``markers`` and name a tokenizer."""
    if "source_format" in data:
        return SourceFormat(data["source_format"])
    if data.get("tokenizer", SP_MODEL_FILE) != SP_MODEL_FILE:
        return SourceFormat.SPACED
    return SourceFormat.MARKERS if data.get("markers") else SourceFormat.PIECES
