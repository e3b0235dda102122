"""The eval rows every engine receives, encoded once, and their exact match."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from mtop_edge.core.pointer import split_words, to_pointer_tokens
from mtop_edge.core.source import Source
from mtop_edge.core.spec import PointerSpec
from mtop_edge.data import Example, encodable
from mtop_edge.formats import load_source
from mtop_edge.metrics import id_exact_matches


@dataclass
class Inputs:
    """The encoded eval rows every engine receives, and the step count forced on random weights."""

    examples: list[Example]
    sources: list[Source]
    forced_steps: int | None

    def request(self, rows: Sequence[int]) -> tuple:
        """What a worker is sent for these rows: ids, word counts, word starts, forced steps."""
        sources = [self.sources[i] for i in rows]
        starts = [s.word_starts for s in sources] if sources[0].word_starts is not None else None
        return [s.ids for s in sources], [len(s.words) for s in sources], starts, self.forced_steps


def prepare_inputs(
    checkpoint: Path, spec: PointerSpec, examples: Sequence[Example], rows: int, trained: bool
) -> Inputs:
    kept, sources = encodable(examples, load_source(checkpoint, spec), rows)
    forced = None
    if not trained:  # the mean MTOP target length, EOS included
        lengths = [len(to_pointer_tokens(e.tree, split_words(e.utterance))) + 1 for e in kept]
        forced = round(sum(lengths) / len(lengths))
    return Inputs(kept, sources, forced)


def exact_match(spec: PointerSpec, inputs: Inputs, outputs: Sequence[Sequence[int]]) -> float:
    hits, _ = id_exact_matches(spec, outputs, [e.tree for e in inputs.examples], inputs.sources)
    return hits / len(inputs.examples)
