"""The Parser: an exported model directory in, typed parse results out. No torch anywhere."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from mtop_edge.errors import FormError, InputError, ModelError
from mtop_edge.forms import Intent
from mtop_edge.manifest import DEFAULT_MODEL_DIR, Manifest
from mtop_edge.metrics import Rejected
from mtop_edge.pointer import Word
from mtop_edge.runtime.decoder import Decoded, GreedyDecoder
from mtop_edge.runtime.grammar import Grammar
from mtop_edge.runtime.results import ParseResult
from mtop_edge.source import SourceEncoder, pad_batch


def default_model_dir() -> Path:
    """The embedded default model.

    Raises:
        ModelError: this installation has no embedded model.
    """
    if not (DEFAULT_MODEL_DIR / "manifest.json").is_file():
        raise ModelError(
            f"no default model is embedded in this installation ({DEFAULT_MODEL_DIR} is empty); "
            "pass --model DIR with a directory written by `mtop-edge export`"
        )
    return DEFAULT_MODEL_DIR


class Parser:
    """Parses utterances with an exported model on CPU or CUDA.

    >>> parser = Parser.load()                      # the embedded default model
    >>> parser.parse("set an alarm for 7am").logical_form
    """

    def __init__(
        self,
        manifest: Manifest,
        decoder: GreedyDecoder,
        *,
        constrain: bool = True,
        label_pairs: bool = True,
        max_steps: int | None = None,
    ) -> None:
        self.manifest = manifest
        self.spec = manifest.spec
        self.decoder = decoder
        self.source = SourceEncoder.load(manifest.directory, self.spec)
        # the grammar works over the trimmed decoder's ids, or over the target columns of an untrimmed one
        columns = manifest.decoder_ids or self.spec.decoder_vocabulary()
        self.grammar = Grammar(self.spec, columns, use_pairs=label_pairs) if constrain else None
        self.max_steps = max_steps or self.spec.max_target_tokens
        self._original = None if manifest.decoder_ids is None else np.asarray(manifest.decoder_ids, dtype=np.int64)
        self._encoder_map = None
        if manifest.encoder_ids is not None:  # the encoder vocabulary was trimmed: map ids, unseen -> <unk>
            kept = {original: i for i, original in enumerate(manifest.encoder_ids)}
            size = max(self.source.processor.get_piece_size(), max(self.spec.symbol_ids) + 1)
            self._encoder_map = np.array([kept.get(i, kept[self.spec.unk_id]) for i in range(size)], dtype=np.int64)

    @classmethod
    def load(
        cls,
        model_dir: str | Path | None = None,
        *,
        device: str = "cpu",
        threads: int | None = None,
        constrain: bool = True,
        label_pairs: bool = True,
        max_steps: int | None = None,
        optimization: str = "all",
    ) -> Parser:
        """Load an exported model directory (default: the embedded model).

        ``constrain`` allows only well-formed trees; ``label_pairs`` further allows only the
        intent/slot pairs seen in training (when the manifest records them).

        Raises:
            ModelError: missing or corrupt model files (named).
            DeviceError: the device cannot be used.
        """
        manifest = Manifest.load(model_dir if model_dir is not None else default_model_dir())
        decoder = GreedyDecoder(manifest, device=device, threads=threads, optimization=optimization)
        return cls(manifest, decoder, constrain=constrain, label_pairs=label_pairs, max_steps=max_steps)

    def parse(self, utterance: str, *, truncate: bool = False) -> ParseResult:
        """Parse one utterance.

        Raises:
            InputError: empty, or more words than the model can point to (without ``truncate``).
        """
        return self.parse_batch([utterance], truncate=truncate)[0]

    def parse_batch(
        self, utterances: Sequence[str], *, truncate: bool = False, strict: bool = True, batch_size: int = 32
    ) -> list[ParseResult]:
        """Parse many utterances, batched internally by length; results keep the input order.

        With ``strict`` a bad utterance raises InputError; otherwise it yields a result whose
        ``error`` says why, and every other utterance is still parsed.
        """
        results: list[ParseResult | None] = [None] * len(utterances)
        prepared = []
        for i, utterance in enumerate(utterances):
            try:
                source = self.source.prepare(utterance, truncate=truncate)
                prepared.append((i, utterance, source.words, source.truncated, source.ids))
            except InputError as exc:
                if strict:
                    raise
                results[i] = ParseResult(utterance, None, error=str(exc), rejected=True)
        prepared.sort(key=lambda row: len(row[4]))
        for start in range(0, len(prepared), batch_size):
            chunk = prepared[start : start + batch_size]
            decoded = self.decode_ids([row[4] for row in chunk], [len(row[2]) for row in chunk])
            for (i, utterance, words, truncated, _), ids, ended in zip(chunk, decoded.ids, decoded.ended, strict=True):
                results[i] = self._result(utterance, words, truncated, ids, ended)
        return results

    def parse_trees(self, utterances: Sequence[str]) -> list[Intent | Rejected | None]:
        """What `evaluate` scores: the tree, None for a malformed output, Rejected for a refused input."""
        return [Rejected(r.error) if r.rejected else r.tree for r in self.parse_batch(utterances, strict=False)]

    def decode_ids(
        self, sources: Sequence[Sequence[int]], n_words: Sequence[int], *, forced_steps: int | None = None
    ) -> Decoded:
        """Greedy decoding of encoded sources; ids are the exported decoder's."""
        ids, mask = pad_batch(sources, self.spec.pad_id)
        if self._encoder_map is not None:
            ids = self._encoder_map[ids]
        return self.decoder.decode(
            ids, mask, max_steps=self.max_steps, grammar=self.grammar, n_words=n_words, forced_steps=forced_steps
        )

    def original_ids(self, exported: Sequence[int]) -> list[int]:
        """Exported decoder ids -> the checkpoint's ids."""
        if self._original is None or not len(exported):
            return list(exported)
        return self._original[np.asarray(exported, dtype=np.int64)].tolist()

    def _result(self, utterance: str, words: list[Word], truncated: bool, ids: list[int], ended: bool) -> ParseResult:
        # EOS on the last allowed step: with constraints the grammar had to close the tree there (it forces
        # the closing brackets once the steps left only just suffice); without, the output was cut
        capped = not ended or len(ids) + 1 >= self.max_steps
        try:
            if not ended:
                raise FormError(f"no end of sequence within {self.max_steps} steps", position=len(ids), unit="token")
            tree = self.spec.decode(self.original_ids(ids), utterance, words)
        except FormError as exc:
            return ParseResult(utterance, None, error=f"malformed output {exc}", truncated=truncated, capped=capped)
        return ParseResult(utterance, tree, truncated=truncated, capped=capped)
