"""Training rows: examples encoded into source and target ids, and the collators that batch them."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from mtop_edge.core.source import WORD_INDEX, Source, SourceEncoder, encoder_feed
from mtop_edge.core.spec import PointerSpec
from mtop_edge.data import Example
from mtop_edge.datacheck import pointer_round_trip
from mtop_edge.errors import MtopEdgeError


@dataclass
class Features:
    """Encoded rows ready for a collator, their examples and sources, and the rows that could not be encoded."""

    rows: list[dict]
    examples: list[Example]
    skipped: list[str]
    sources: list[Source] = field(default_factory=list)


def encode_examples(examples: Sequence[Example], spec: PointerSpec, encoder: SourceEncoder) -> Features:
    """Source and target ids per row; rows that cannot be aligned or encoded are listed, not dropped silently."""
    rows, kept, skipped, sources = [], [], [], []
    for example in examples:
        tokens, reason = pointer_round_trip(example)
        try:
            if tokens is None:
                raise MtopEdgeError(reason)
            source = encoder.prepare(example.utterance)
            target = spec.target_ids(tokens)
        except (MtopEdgeError, KeyError) as exc:
            skipped.append(f"{example.path}:{example.line}: {exc}")
            continue
        row = {"input_ids": source.ids, "attention_mask": [1] * len(source.ids), "labels": target}
        if source.word_starts is not None:
            row[WORD_INDEX] = source.word_starts
        rows.append(row)
        kept.append(example)
        sources.append(source)
    return Features(rows, kept, skipped, sources)


class WordPieceCollator:
    """Batches of word-piece rows: the encoder's feed (`encoder_feed`) and labels padded with -100."""

    def __init__(self, spec: PointerSpec) -> None:
        self.spec = spec

    def __call__(self, rows: list[dict]) -> dict:
        import torch

        feed = encoder_feed([r["input_ids"] for r in rows], self.spec, [r[WORD_INDEX] for r in rows])
        batch = {name: torch.from_numpy(array) for name, array in feed.items()}
        width = max(len(r["labels"]) for r in rows)
        labels = torch.full((len(rows), width), -100, dtype=torch.long)
        for i, row in enumerate(rows):
            labels[i, : len(row["labels"])] = torch.tensor(row["labels"])
        batch["labels"] = labels
        return batch


class WordDropout:
    """A collator wrapper: each source word's pieces (between markers) read as <unk> with probability
    ``rate``, drawn afresh per batch, so the model cannot lean on any one word (markers stay: pointers
    still address every word)."""

    def __init__(self, collator, spec: PointerSpec, rate: float, seed: int) -> None:
        import torch

        self.collator, self.rate, self.unk = collator, rate, spec.unk_id
        self.markers = torch.tensor(spec.pointer_ids)
        self.keep = torch.tensor([spec.pad_id, spec.eos_id, *spec.pointer_ids])
        self.generator = torch.Generator().manual_seed(seed)

    def __call__(self, rows):
        import torch

        batch = self.collator(rows)
        ids = batch["input_ids"]
        word = torch.isin(ids, self.markers).cumsum(1)  # word number of each position (marker included)
        dropped = torch.rand(ids.shape[0], int(word.max()) + 1, generator=self.generator) < self.rate
        hit = dropped.gather(1, word) & (word > 0) & ~torch.isin(ids, self.keep)
        batch["input_ids"] = ids.masked_fill(hit, self.unk)
        return batch
