"""Source formatting: utterance -> encoder input ids, the same at training and at inference.

Pieces come from sentencepiece directly (not a Hugging Face tokenizer), so the light runtime and
the trainer produce identical ids by construction.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import sentencepiece as spm

from mtop_edge.core.pointer import Word, split_words
from mtop_edge.core.spec import SP_MODEL_FILE, PointerSpec
from mtop_edge.errors import InputError, ModelError


def load_sentencepiece(path: str | Path) -> spm.SentencePieceProcessor:
    """Load a sentencepiece model, naming the file if it is missing or corrupt."""
    path = Path(path)
    if not path.is_file():
        raise ModelError(f"{path}: missing sentencepiece model")
    processor = spm.SentencePieceProcessor()
    try:
        processor.Load(str(path))
    except (OSError, RuntimeError) as exc:
        raise ModelError(f"{path}: corrupt sentencepiece model ({exc})") from None
    return processor


def marked_text(words: list[Word]) -> str:
    """The text a marker-format sentencepiece model is trained on: words joined by spaces."""
    return " ".join(w.text for w in words)


@dataclass(frozen=True)
class Source:
    """An utterance ready for the encoder: its words (what pointers index), the input ids, and
    whether words were cut so that it fits the model."""

    utterance: str
    words: list[Word]
    ids: list[int]
    truncated: bool


class SourceEncoder:
    """Encodes utterances for a model described by a PointerSpec.

    ``tokenizer``: a Hugging Face ``tokenizers.Tokenizer`` for models whose spec names
    ``tokenizer.json`` (checkpoints trained elsewhere, whose pre-tokenization sentencepiece alone
    does not reproduce); None reads pieces from ``processor``.
    """

    def __init__(self, processor: spm.SentencePieceProcessor | None, spec: PointerSpec, tokenizer=None) -> None:
        self.processor = processor
        self.spec = spec
        self.tokenizer = tokenizer
        self._pointer_ids = spec.pointer_ids
        self._split = split_words
        if spec.words != "mtop-edge":
            from mtop_edge.formats import damp

            if spec.words != damp.WORDS:
                raise ModelError(f"unknown word splitter {spec.words!r} in the pointer spec")
            self._split = damp.split_words

    @classmethod
    def load(cls, directory: str | Path, spec: PointerSpec) -> SourceEncoder:
        """The encoder for a model or checkpoint directory: its sentencepiece model or its tokenizer.json."""
        directory = Path(directory)
        if spec.tokenizer == SP_MODEL_FILE:
            return cls(load_sentencepiece(directory / SP_MODEL_FILE), spec)
        from mtop_edge.formats.damp import load_tokenizer

        path = directory / spec.tokenizer
        if not path.is_file():
            raise ModelError(f"{path}: missing tokenizer")
        return cls(None, spec, tokenizer=load_tokenizer(path))

    def words(self, utterance: str, *, truncate: bool = False) -> tuple[list[Word], bool]:
        """The utterance's words, and whether they were cut to the number the model can point to.

        Raises:
            InputError: empty utterance, or more words than pointers without ``truncate``.
        """
        words = self._split(utterance)
        if not words:
            raise InputError("empty utterance: nothing to parse")
        limit = self.spec.vocab.max_pointers
        if len(words) <= limit:
            return words, False
        if not truncate:
            raise InputError(
                f"utterance has {len(words)} words but the model can point to at most {limit} "
                "(use --truncate to parse the first ones)"
            )
        return words[:limit], True

    def prepare(self, utterance: str, *, truncate: bool = False) -> Source:
        """Words and ids of one utterance: what every engine feeds its encoder.

        With ``truncate``, words are cut from the end until both limits hold: the pointer count
        and the source length in tokens (a few very long words can pass the first and not the second).

        Raises:
            InputError: empty, or over either limit without ``truncate`` (the message says which).
        """
        words, truncated = self.words(utterance, truncate=truncate)
        if not truncate:
            return Source(utterance, words, self.encode(utterance, words), False)
        while True:
            ids = self._ids(utterance, words)
            if len(ids) <= self.spec.max_source_tokens:
                return Source(utterance, words, ids, truncated)
            if len(words) == 1:
                raise InputError(
                    f"the first word alone is {len(ids)} tokens long; the model takes at most "
                    f"{self.spec.max_source_tokens}, so no truncation fits"
                )
            words, truncated = words[:-1], True

    def encode(self, utterance: str, words: list[Word]) -> list[int]:
        """Encoder input ids, EOS included.

        Raises:
            InputError: the ids exceed the model's source length.
        """
        ids = self._ids(utterance, words)
        if len(ids) > self.spec.max_source_tokens:
            raise InputError(
                f"utterance is {len(ids)} tokens long; the model takes at most {self.spec.max_source_tokens} "
                "(use --truncate to parse the first words that fit)"
            )
        return ids

    def _ids(self, utterance: str, words: list[Word]) -> list[int]:
        if self.tokenizer is not None:  # the words as the checkpoint was trained on them, spaced
            ids = self.tokenizer.encode(self.spec.source_prefix + " ".join(w.text for w in words)).ids
            return ids if ids and ids[-1] == self.spec.eos_id else [*ids, self.spec.eos_id]
        if self.spec.markers:
            ids: list[int] = []
            # one encode call per word: sentencepiece's list form has a fixed cost per call (its batch
            # machinery) that dwarfs a few short words (measured: 11 us per utterance against 105-170)
            encode = self.processor.encode
            for pointer_id, word in zip(self._pointer_ids, words, strict=False):
                ids.append(pointer_id)
                ids.extend(encode(word.text))
        else:
            end = words[-1].end
            ids = self.processor.encode(utterance[:end])
        ids.append(self.spec.eos_id)
        return ids


def pad_batch(sources: list[list[int]] | tuple, pad_id: int) -> tuple[np.ndarray, np.ndarray]:
    """Input ids padded to the longest row with ``pad_id``, and the attention mask (int64 both)."""
    width = max(len(s) for s in sources)
    ids = np.full((len(sources), width), pad_id, dtype=np.int64)
    mask = np.zeros((len(sources), width), dtype=np.int64)
    for row, source in enumerate(sources):
        ids[row, : len(source)] = source
        mask[row, : len(source)] = 1
    return ids, mask
