"""The Parser: an exported model directory in, typed parse results out. No torch anywhere."""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from mtop_edge.choices import Constraints
from mtop_edge.core.forms import Intent
from mtop_edge.core.pointer import Word
from mtop_edge.core.source import Source, encoder_feed
from mtop_edge.errors import FormError, InputError
from mtop_edge.formats import load_source
from mtop_edge.manifest import Manifest, resolve_model_dir
from mtop_edge.metrics import Rejected
from mtop_edge.runtime.confidence import node_confidences
from mtop_edge.runtime.decoder import Decoded, GreedyDecoder
from mtop_edge.runtime.grammar import Grammar
from mtop_edge.runtime.results import ParseResult
from mtop_edge.runtime.sessions import SessionFactory, ThreadPool

# rows decoded at once (see Parser.decode_ids): small models' weights and a slice's activations stay
# in the CPU cache; a model as wide as mT5-small reads its weights from memory at every step, so it
# decodes larger slices and encodes them in length-sorted groups of a few dozen tokens
# (runtime/encoding.py). Chosen by measurement: benchmarks/README.md, "Slices", "Rows that are done
# leave the batch" and "The encoder in token-budget groups".
MAX_BATCH = {"cpu": 12, "cuda": 16}
WIDE_MODEL_BATCH = 32  # CPU, d_model above 256
# the same where the step attends in row groups (export option cross_attention_groups): a slice's
# padding no longer costs its cross-attention, so larger slices read the weights for more rows
GROUPED_WIDE_MODEL_BATCH = 128
WIDE_MODEL_ENCODER_TOKENS = 64  # padded tokens per encoder call
PACKED_ENCODER_TOKENS = 256  # the same for an encoder that skips padding itself: only its attention pays for it


def is_wide_on_cpu(manifest: Manifest, device: str) -> bool:
    return device == "cpu" and manifest.architecture.d_model > 256


def default_max_batch(manifest: Manifest, device: str) -> int:
    """Rows per slice when the caller does not say: MAX_BATCH, or for wide models on the CPU WIDE_MODEL_BATCH
    (GROUPED_WIDE_MODEL_BATCH where the step attends in row groups)."""
    if not is_wide_on_cpu(manifest, device):
        return MAX_BATCH[device]
    return GROUPED_WIDE_MODEL_BATCH if manifest.row_groups > 1 else WIDE_MODEL_BATCH


def default_encoder_tokens(manifest: Manifest, device: str) -> int | None:
    """Padded tokens per encoder call inside a slice for wide models on the CPU: WIDE_MODEL_ENCODER_TOKENS,
    or PACKED_ENCODER_TOKENS where the encoder packs its tokens; else the whole slice in one call."""
    if not is_wide_on_cpu(manifest, device):
        return None
    return PACKED_ENCODER_TOKENS if manifest.packed_encoder else WIDE_MODEL_ENCODER_TOKENS


def default_model_dir() -> Path:
    """The embedded default model.

    Raises:
        ModelError: this installation has no embedded model.
    """
    return resolve_model_dir(None)


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
        constraints: Constraints | str = Constraints.PAIRS,
        max_steps: int | None = None,
        max_batch: int | None = None,
        min_confidence: float | None = None,
    ) -> None:
        if max_batch is not None and max_batch < 1:
            raise ValueError(f"max_batch must be at least 1, not {max_batch}")
        if min_confidence is not None and not 0.0 <= min_confidence <= 1.0:
            raise ValueError(f"min_confidence is a probability (0 to 1), not {min_confidence}")
        self.min_confidence = min_confidence
        self.max_batch = max_batch or default_max_batch(manifest, decoder.device)
        self.manifest = manifest
        self.spec = manifest.spec
        self.decoder = decoder
        self.source = load_source(manifest.directory, self.spec)
        # the grammar works over the trimmed decoder's ids, or over the target columns of an untrimmed one
        columns = manifest.decoder_ids or self.spec.decoder_vocabulary()
        self.constraints = Constraints(constraints)
        use_pairs = self.constraints is Constraints.PAIRS
        self.grammar = (
            None if self.constraints is Constraints.NONE else Grammar(self.spec, columns, use_pairs=use_pairs)
        )
        self.max_steps = max_steps or self.spec.max_target_tokens
        self._original = None if manifest.decoder_ids is None else np.asarray(manifest.decoder_ids, dtype=np.int64)
        self._encoder_map = None
        if manifest.encoder_ids is not None:  # the encoder vocabulary was trimmed: map ids, unseen -> <unk>
            kept = {original: i for i, original in enumerate(manifest.encoder_ids)}
            size = max(self.source.pieces.vocab_size, max(self.spec.symbol_ids) + 1)
            self._encoder_map = np.array([kept.get(i, kept[self.spec.unk_id]) for i in range(size)], dtype=np.int64)

    @classmethod
    def load(
        cls,
        model_dir: str | Path | None = None,
        *,
        device: str = "cpu",
        threads: int | None = None,
        pool: ThreadPool | None = None,
        constraints: Constraints | str = Constraints.PAIRS,
        max_steps: int | None = None,
        max_batch: int | None = None,
        min_confidence: float | None = None,
    ) -> Parser:
        """Load an exported model directory, or an embedded model by name (default: the embedded default).

        ``constraints``: `Constraints` (pairs: well-formed trees with the intent/slot pairs seen in
        training; tree: any well-formed tree; none). ``pool``: what `share_thread_pool` returned, in
        a process that made one. ``max_batch`` bounds the rows decoded at once (default:
        `default_max_batch`; see `decode_ids`). A parse whose confidence is below ``min_confidence``
        comes back with ``understood`` False (its tree still given).

        Raises:
            ModelError: missing or corrupt model files (named).
            DeviceError: the device cannot be used.
        """
        manifest = Manifest.load(resolve_model_dir(model_dir))
        sessions = SessionFactory(device, threads=threads, pool=pool)
        decoder = GreedyDecoder(manifest, sessions, encoder_tokens=default_encoder_tokens(manifest, device))
        return cls(
            manifest,
            decoder,
            constraints=constraints,
            max_steps=max_steps,
            max_batch=max_batch,
            min_confidence=min_confidence,
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
        decoded = self.decode_sources([source for _, _, source in prepared], batch_size=batch_size)
        for (i, utterance, source), ids, ended, logprobs in zip(
            prepared, decoded.ids, decoded.ended, decoded.logprobs, strict=True
        ):
            results[i] = self._result(utterance, source.words, source.truncated, ids, ended, logprobs)
        return results

    def parse_trees(self, utterances: Sequence[str]) -> list[Intent | Rejected | None]:
        """What `evaluate` scores: the tree, None for a malformed output, Rejected for a refused input."""
        return [Rejected(r.error) if r.rejected else r.tree for r in self.parse_batch(utterances, strict=False)]

    def decode_sources(
        self, sources: Sequence[Source], *, forced_steps: int | None = None, batch_size: int | None = None
    ) -> Decoded:
        """Greedy decoding of prepared sources (`source.prepare`); see `decode_ids`."""
        starts = [s.word_starts for s in sources] if sources and sources[0].word_starts is not None else None
        ids, words = [s.ids for s in sources], [len(s.words) for s in sources]
        return self.decode_ids(ids, words, starts, forced_steps=forced_steps, batch_size=batch_size)

    def decode_ids(
        self,
        sources: Sequence[Sequence[int]],
        n_words: Sequence[int],
        word_starts: Sequence[Sequence[int]] | None = None,
        *,
        forced_steps: int | None = None,
        batch_size: int | None = None,
    ) -> Decoded:
        """Greedy decoding of encoded sources; ids are the exported decoder's, in the input order.

        ``word_starts``: each row's first-piece positions (word-piece models only). More than
        ``batch_size`` rows (default ``max_batch``) are sorted by length and decoded in slices of
        that size: little padding, and memory bounded by the slice, not the input.
        """
        size = batch_size or self.max_batch
        if not sources:
            return Decoded([], [], [])
        if len(sources) <= size:
            return self._decode(sources, n_words, word_starts, forced_steps)
        order = sorted(range(len(sources)), key=lambda i: len(sources[i]))
        ids: list[list[int]] = [[] for _ in sources]
        ended = [False] * len(sources)
        logprobs: list[list[float]] = [[] for _ in sources]
        for start in range(0, len(order), size):
            rows = order[start : start + size]
            starts = None if word_starts is None else [word_starts[i] for i in rows]
            part = self._decode([sources[i] for i in rows], [n_words[i] for i in rows], starts, forced_steps)
            for i, row_ids, row_ended, row_logprobs in zip(rows, part.ids, part.ended, part.logprobs, strict=True):
                ids[i], ended[i], logprobs[i] = row_ids, row_ended, row_logprobs
        return Decoded(ids, ended, logprobs)

    def _decode(self, sources, n_words, word_starts, forced_steps: int | None) -> Decoded:
        feed = encoder_feed(sources, self.spec, word_starts)
        if self._encoder_map is not None:
            feed["input_ids"] = self._encoder_map[feed["input_ids"]]
        return self.decoder.decode(
            feed, max_steps=self.max_steps, grammar=self.grammar, n_words=n_words, forced_steps=forced_steps
        )

    def original_ids(self, exported: Sequence[int]) -> list[int]:
        """Exported decoder ids -> the checkpoint's ids."""
        if self._original is None or not len(exported):
            return list(exported)
        return self._original[np.asarray(exported, dtype=np.int64)].tolist()

    def _result(
        self, utterance: str, words: list[Word], truncated: bool, ids: list[int], ended: bool, logprobs: list[float]
    ) -> ParseResult:
        # EOS on the last allowed step: with constraints the grammar had to close the tree there (it forces
        # the closing brackets once the steps left only just suffice); without, the output was cut
        capped = not ended or len(ids) + 1 >= self.max_steps
        confidence = math.exp(sum(logprobs))
        try:
            if not ended:
                raise FormError(f"no end of sequence within {self.max_steps} steps", position=len(ids), unit="token")
            original = self.original_ids(ids)
            tree = self.spec.decode(original, utterance, words)
        except FormError as exc:
            return ParseResult(
                utterance,
                None,
                error=f"malformed output {exc}",
                truncated=truncated,
                capped=capped,
                confidence=confidence,
                understood=False,
            )
        nodes = node_confidences([self.spec.symbol(i) for i in original], logprobs)
        understood = self.min_confidence is None or confidence >= self.min_confidence
        return ParseResult(
            utterance,
            tree,
            truncated=truncated,
            capped=capped,
            confidence=confidence,
            node_confidences=tuple(nodes),
            understood=understood,
        )
