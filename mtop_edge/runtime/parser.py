"""The Parser: an exported model directory in, typed parse results out. No torch anywhere."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from mtop_edge.core.forms import Intent
from mtop_edge.core.pointer import Word
from mtop_edge.core.source import SourceEncoder, pad_batch
from mtop_edge.errors import FormError, InputError, ModelError
from mtop_edge.manifest import DEFAULT_MODEL_DIR, Manifest
from mtop_edge.metrics import Rejected
from mtop_edge.runtime.decoder import Decoded, GreedyDecoder
from mtop_edge.runtime.grammar import Grammar
from mtop_edge.runtime.results import ParseResult

# rows decoded at once (see Parser.decode_ids). On the CPU, small models' weights stay in the cache
# and 12-row slices keep a slice's activations there too (32-row calls, 1 thread: edge-pointer
# 745-751 utt/s against 637-677 with 16 rows and 724-737 with 8; edge-tiny-h200 422-429 against
# 348-349 and 417-422; 32-row slices: 592 and 370). A model as wide as mT5-small reads its weights
# from memory at every decoder step, so larger slices share each read among more rows, but the
# encoder's cost follows the padded tokens, which a large slice multiplies: wide models decode 32
# rows at once and encode them in length-sorted groups of 8 (the mT5-small shape: 158 utt/s,
# against 134 with 16-row slices and 124 with 32 encoded at once). With done rows leaving the batch
# (decoder.DROP_AT) 12 stays the best for small models (edge-tiny-h200: 439-509 utt/s, 16 rows 397-460,
# 32 rows 348-434). CUDA keeps 16, not measured since.
MAX_BATCH = {"cpu": 12, "cuda": 16}
WIDE_MODEL_BATCH = 32  # CPU, d_model above 256
WIDE_MODEL_ENCODER_ROWS = 8


def is_wide_on_cpu(manifest: Manifest, device: str) -> bool:
    return device == "cpu" and manifest.architecture.d_model > 256


def default_max_batch(manifest: Manifest, device: str) -> int:
    """Rows per slice when the caller does not say: MAX_BATCH, or WIDE_MODEL_BATCH for wide models on the CPU."""
    return WIDE_MODEL_BATCH if is_wide_on_cpu(manifest, device) else MAX_BATCH[device]


def default_encoder_rows(manifest: Manifest, device: str) -> int | None:
    """Rows per encoder call inside a slice: WIDE_MODEL_ENCODER_ROWS for wide models on the CPU, else the slice."""
    return WIDE_MODEL_ENCODER_ROWS if is_wide_on_cpu(manifest, device) else None


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
        max_batch: int | None = None,
    ) -> None:
        if max_batch is not None and max_batch < 1:
            raise ValueError(f"max_batch must be at least 1, not {max_batch}")
        self.max_batch = max_batch or default_max_batch(manifest, decoder.device)
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
        max_batch: int | None = None,
        optimization: str = "all",
    ) -> Parser:
        """Load an exported model directory (default: the embedded model).

        ``constrain`` allows only well-formed trees; ``label_pairs`` further allows only the
        intent/slot pairs seen in training (when the manifest records them). ``max_batch`` bounds
        the rows decoded at once (default: `default_max_batch`; see `decode_ids`).

        Raises:
            ModelError: missing or corrupt model files (named).
            DeviceError: the device cannot be used.
        """
        manifest = Manifest.load(model_dir if model_dir is not None else default_model_dir())
        decoder = GreedyDecoder(
            manifest,
            device=device,
            threads=threads,
            optimization=optimization,
            encoder_rows=default_encoder_rows(manifest, device),
        )
        return cls(
            manifest, decoder, constrain=constrain, label_pairs=label_pairs, max_steps=max_steps, max_batch=max_batch
        )

    def parse(self, utterance: str, *, truncate: bool = False) -> ParseResult:
        """Parse one utterance.

        Raises:
            InputError: empty, or more words than the model can point to (without ``truncate``).
            TypeError: ``utterance`` is not a str (many utterances go to `parse_batch`).
        """
        if not isinstance(utterance, str):
            raise TypeError(f"parse takes one str, not {type(utterance).__name__}; use parse_batch for many")
        return self.parse_batch([utterance], truncate=truncate)[0]

    def parse_batch(
        self, utterances: Sequence[str], *, truncate: bool = False, strict: bool = True, batch_size: int | None = None
    ) -> list[ParseResult]:
        """Parse many utterances; results keep the input order (``batch_size``: see `decode_ids`).

        With ``strict`` a bad utterance raises InputError; otherwise it yields a result whose
        ``error`` says why, and every other utterance is still parsed.

        Raises:
            TypeError: ``utterances`` is one str, or holds something that is not a str.
        """
        if isinstance(utterances, str) or not all(isinstance(u, str) for u in utterances):
            raise TypeError("parse_batch takes a sequence of str (one utterance goes to parse)")
        results: list[ParseResult | None] = [None] * len(utterances)
        prepared = []
        for i, utterance in enumerate(utterances):
            try:
                prepared.append((i, utterance, self.source.prepare(utterance, truncate=truncate)))
            except InputError as exc:
                if strict:
                    raise
                results[i] = ParseResult(utterance, None, error=str(exc), rejected=True)
        decoded = self.decode_ids(
            [source.ids for _, _, source in prepared],
            [len(source.words) for _, _, source in prepared],
            batch_size=batch_size,
        )
        for (i, utterance, source), ids, ended in zip(prepared, decoded.ids, decoded.ended, strict=True):
            results[i] = self._result(utterance, source.words, source.truncated, ids, ended)
        return results

    def parse_trees(self, utterances: Sequence[str]) -> list[Intent | Rejected | None]:
        """What `evaluate` scores: the tree, None for a malformed output, Rejected for a refused input."""
        return [Rejected(r.error) if r.rejected else r.tree for r in self.parse_batch(utterances, strict=False)]

    def decode_ids(
        self,
        sources: Sequence[Sequence[int]],
        n_words: Sequence[int],
        *,
        forced_steps: int | None = None,
        batch_size: int | None = None,
    ) -> Decoded:
        """Greedy decoding of encoded sources; ids are the exported decoder's, in the input order.

        More than ``batch_size`` rows (default ``max_batch``) are sorted by length and decoded in
        slices of that size: little padding, and memory bounded by the slice, not the input
        (measured on edge-tiny-h200, 128 rows at once: 16-row slices gave 255 utterances/s and
        123 MB peak, one 128-row batch 136/s and 495 MB; benchmarks/README.md).
        """
        size = batch_size or self.max_batch
        if not sources:
            return Decoded([], [])
        if len(sources) <= size:
            return self._decode(sources, n_words, forced_steps)
        order = sorted(range(len(sources)), key=lambda i: len(sources[i]))
        ids: list[list[int]] = [[] for _ in sources]
        ended = [False] * len(sources)
        for start in range(0, len(order), size):
            rows = order[start : start + size]
            part = self._decode([sources[i] for i in rows], [n_words[i] for i in rows], forced_steps)
            for i, row_ids, row_ended in zip(rows, part.ids, part.ended, strict=True):
                ids[i], ended[i] = row_ids, row_ended
        return Decoded(ids, ended)

    def _decode(self, sources: Sequence[Sequence[int]], n_words: Sequence[int], forced_steps: int | None) -> Decoded:
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
