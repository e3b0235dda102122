"""`mtop-edge evaluate`: score an engine on a data file."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from tqdm import tqdm

from mtop_edge.core.forms import Intent
from mtop_edge.data import Example
from mtop_edge.metrics import Rejected, Scores, score

ParseBatch = Callable[[Sequence[str]], list[Intent | Rejected | None]]


@dataclass(frozen=True)
class Evaluation:
    scores: Scores
    seconds: float
    predictions: list[Intent | Rejected | None]

    @property
    def examples_per_s(self) -> float:
        return self.scores.n / self.seconds if self.seconds else 0.0

    def to_json(self) -> dict:
        return {
            **self.scores.to_dict(),
            "examples_per_s": round(self.examples_per_s, 2),
            "seconds": round(self.seconds, 3),
        }


def evaluate(
    parse_batch: ParseBatch, examples: Sequence[Example], *, batch_size: int = 32, progress: bool = True
) -> Evaluation:
    """Run ``parse_batch`` over the rows in batches (timed) and score the trees against gold."""
    predictions: list[Intent | Rejected | None] = []
    started = time.perf_counter()
    with tqdm(total=len(examples), desc="evaluating", unit="row", disable=not progress, leave=False) as bar:
        for i in range(0, len(examples), batch_size):
            batch = [e.utterance for e in examples[i : i + batch_size]]
            predictions.extend(parse_batch(batch))
            bar.update(len(batch))
    seconds = time.perf_counter() - started
    return Evaluation(score([e.tree for e in examples], predictions), seconds, predictions)
