"""Why an int8 model's batched parses differ from its one-by-one parses: which part of the graph.

    python benchmarks/batch_agreement.py [--model DIR] --data ../shared/data/mtop/en/eval.txt [--rows 1200]

Parses the first ``--rows`` utterances one by one, then counts how many parses are the same:
in 32-row batches; in 32-row batches of rows of one token length (no padding at all); and in
32-row batches with the encoder run one row per call (the decoder still batched). Dynamic int8
takes one activation scale per call, so this says whether padding, the encoder or the decoder
carries the difference.
"""

from __future__ import annotations

import argparse
import collections

from mtop_edge.data import read_examples
from mtop_edge.runtime import Parser


def main() -> None:
    arguments = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    arguments.add_argument("--model", default=None)
    arguments.add_argument("--data", required=True)
    arguments.add_argument("--rows", type=int, default=1200)
    arguments.add_argument("--threads", type=int, default=1)
    args = arguments.parse_args()
    utterances = [e.utterance for e in read_examples(args.data)][: args.rows]
    parser = Parser.load(args.model, threads=args.threads)

    def forms(rows: list[str], batch_size: int) -> list[str | None]:
        return [r.logical_form for r in parser.parse_batch(rows, batch_size=batch_size, strict=False)]

    alone = forms(utterances, 1)
    batched = forms(utterances, 32)
    by_length: dict[int, list[int]] = collections.defaultdict(list)
    for i, utterance in enumerate(utterances):
        by_length[len(parser.source.prepare(utterance, truncate=True).ids)].append(i)
    same_length: list[str | None] = [None] * len(utterances)
    for rows in by_length.values():
        for start in range(0, len(rows), 32):
            chunk = rows[start : start + 32]
            for i, form in zip(chunk, forms([utterances[i] for i in chunk], 32), strict=True):
                same_length[i] = form
    parser.decoder.encoder.group_rows = 1  # the encoder one row per call, the decoder batched
    encoder_alone = forms(utterances, 32)

    def agree(other: list[str | None]) -> int:
        return sum(a == b for a, b in zip(alone, other, strict=True))

    print(f"rows {len(utterances)}; parses equal to one by one:")
    print(f"  32-row batches: {agree(batched)}")
    print(f"  32-row batches of one token length (no padding): {agree(same_length)}")
    print(f"  32-row batches, the encoder one row per call: {agree(encoder_alone)}")


if __name__ == "__main__":
    main()
