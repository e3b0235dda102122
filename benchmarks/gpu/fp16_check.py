"""fp16 against fp32 on one device: are fp16 outputs finite, and how often is greedy output identical?

Runs both exports unconstrained (the raw greedy output, where any drift shows) and constrained (as
users run them), on the same eval rows in batches of 32, and checks the encoder states and the
first decoder step's logits of every batch for NaN/inf. Prints one JSON object and writes it to --out.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from mtop_edge.core.forms import same_parse
from mtop_edge.core.source import pad_batch
from mtop_edge.data import read_examples
from mtop_edge.errors import InputError
from mtop_edge.runtime import Parser


def encoded_rows(parser: Parser, examples):
    rows = []
    for example in examples:
        try:
            source = parser.source.prepare(example.utterance)
        except InputError:
            continue
        rows.append((example, source.ids, len(source.words)))
    return rows


def finite_first_step(parser: Parser, sources, n_words) -> bool:
    """Encoder states and the first step's logits of one batch are all finite."""
    decoder = parser.decoder
    ids, mask = pad_batch(sources, parser.spec.pad_id)
    (hidden,) = decoder.encoder.run(["last_hidden_state"], {"input_ids": ids, "attention_mask": mask})
    start = np.full((len(sources), 1), decoder.start_id, dtype=np.int64)
    logits = decoder.first.run(
        ["logits"], {"input_ids": start, "encoder_attention_mask": mask, "encoder_hidden_states": hidden}
    )[0]
    return bool(np.isfinite(hidden).all() and np.isfinite(logits).all())


def main() -> None:
    arguments = argparse.ArgumentParser(description=__doc__)
    arguments.add_argument("--fp32", type=Path, required=True)
    arguments.add_argument("--fp16", type=Path, required=True)
    arguments.add_argument("--data", type=Path, required=True)
    arguments.add_argument("--device", default="cuda")
    arguments.add_argument("--limit", type=int)
    arguments.add_argument("--out", type=Path)
    args = arguments.parse_args()

    examples = read_examples(args.data)[: args.limit]
    report: dict = {"device": args.device, "fp32": str(args.fp32), "fp16": str(args.fp16)}
    outputs = {}
    for constrain in (False, True):
        for name in ("fp32", "fp16"):
            parser = Parser.load(getattr(args, name), device=args.device, constrain=constrain)
            report[f"{name}_providers"] = parser.decoder.encoder.get_providers()
            rows = encoded_rows(parser, examples)
            ids, hits, finite = [], 0, True
            for start in range(0, len(rows), 32):
                chunk = rows[start : start + 32]
                sources, counts = [r[1] for r in chunk], [r[2] for r in chunk]
                if not constrain:
                    finite &= finite_first_step(parser, sources, counts)
                decoded = parser.decode_ids(sources, counts)
                for (example, _, _), row, ended in zip(chunk, decoded.ids, decoded.ended, strict=True):
                    ids.append(row if ended else None)
                    words = parser.source.words(example.utterance)[0]
                    tree = parser.spec.try_decode(parser.original_ids(row), example.utterance, words) if ended else None
                    hits += same_parse(tree, example.tree)
            tag = "constrained" if constrain else "unconstrained"
            outputs[(name, tag)] = ids
            report[f"{name}_{tag}_exact_match"] = round(hits / len(rows), 4)
            if not constrain:
                report[f"{name}_finite"] = finite
        same = sum(a == b for a, b in zip(outputs[("fp32", tag)], outputs[("fp16", tag)], strict=True))
        report[f"{tag}_identical"] = same
        report[f"{tag}_identical_share"] = round(same / len(outputs[("fp32", tag)]), 4)
    report["rows"] = len(outputs[("fp32", "constrained")])
    text = json.dumps(report)
    print(text)
    if args.out:
        args.out.write_text(text + "\n")


if __name__ == "__main__":
    main()
