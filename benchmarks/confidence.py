"""How well a model's confidence says when to trust a parse: calibration on eval, rejection by threshold.

    python benchmarks/confidence.py --model DIR --eval ../shared/data/mtop/en/eval.txt \
        [--holdout-from ../shared/data/mtop/en/train.jsonl --fit] [--json OUT]

- a reliability table and the expected calibration error (ECE, 10 equal-width bins) of the
  sequence confidence against exact match, on every eval row;
- with ``--fit``: a temperature for the logits, fitted on rows held out of the *training* data
  (the same seeded 500-row holdout `mtop-edge train` leaves out with ``eval_holdout = 500``; never
  eval rows) by minimising the log loss of confidence against exact match, stored in the manifest
  (``calibration``) when it lowers the holdout's ECE; the eval figures are then measured again;
- the trade-off of ``--min-confidence X`` on eval: the share of wrong parses and of right parses it
  rejects, at a few X; and how many out-of-domain inputs each X rejects: non-English sentences
  (``benchmarks/data/out_of_domain_non_english.txt``), random letter strings, control characters,
  numbers only.
"""

from __future__ import annotations

import argparse
import json
import math
import random
import sys
from pathlib import Path

from mtop_edge.core.forms import same_parse
from mtop_edge.data import read_examples
from mtop_edge.manifest import Manifest, write_manifest
from mtop_edge.runtime import Parser

HERE = Path(__file__).resolve().parent
THRESHOLDS = (0.3, 0.5, 0.7, 0.8, 0.9, 0.95)
TEMPERATURES = (0.6, 0.8, 1.0, 1.25, 1.5, 2.0, 2.5, 3.0)


def reliability(confidences: list[float], correct: list[bool], bins: int = 10) -> tuple[float, list[dict]]:
    """(ECE, one row per non-empty bin: range, rows, mean confidence, accuracy)."""
    rows, ece = [], 0.0
    for b in range(bins):
        low, high = b / bins, (b + 1) / bins
        members = [i for i, c in enumerate(confidences) if low <= c < high or (b == bins - 1 and c == 1.0)]
        if not members:
            continue
        mean = sum(confidences[i] for i in members) / len(members)
        accuracy = sum(correct[i] for i in members) / len(members)
        ece += len(members) / len(confidences) * abs(mean - accuracy)
        rows.append({"bin": f"{low:.1f}-{high:.1f}", "rows": len(members), "confidence": mean, "accuracy": accuracy})
    return ece, rows


def scored(parser: Parser, examples) -> tuple[list[float], list[bool]]:
    results = parser.parse_batch([e.utterance for e in examples], strict=False)
    confidences = [r.confidence if r.confidence is not None else 0.0 for r in results]
    return confidences, [same_parse(r.tree, e.tree) for r, e in zip(results, examples, strict=True)]


def log_loss(confidences: list[float], correct: list[bool]) -> float:
    eps = 1e-6
    return -sum(
        math.log(min(max(c, eps), 1 - eps)) if ok else math.log(1 - min(max(c, eps), 1 - eps))
        for c, ok in zip(confidences, correct, strict=True)
    ) / len(correct)


def holdout_rows(path: Path, count: int = 500, seed: int = 42):
    """The rows `mtop-edge train` holds out of ``path`` (its split_rows with eval_holdout = count)."""
    shuffled = list(read_examples(path))
    random.Random(seed).shuffle(shuffled)
    return shuffled[: min(count, len(shuffled) // 5)]


def fit_temperature(model: Path, examples) -> tuple[float, list[dict]]:
    """The temperature with the lowest log loss on ``examples`` (a grid), and every one tried."""
    tried = []
    for temperature in TEMPERATURES:
        parser = Parser.load(model, threads=1)
        parser.decoder.temperature = temperature
        confidences, correct = scored(parser, examples)
        ece, _ = reliability(confidences, correct)
        tried.append({"temperature": temperature, "log_loss": log_loss(confidences, correct), "ece": ece})
    best = min(tried, key=lambda t: t["log_loss"])
    return best["temperature"], tried


def out_of_domain(seed: int = 7) -> dict[str, list[str]]:
    rng = random.Random(seed)
    letters = "abcdefghijklmnopqrstuvwxyz"
    non_english = (HERE / "data" / "out_of_domain_non_english.txt").read_text(encoding="utf-8").splitlines()
    return {
        "non-English sentences": [line for line in non_english if line.strip()],
        "random letter strings": [
            " ".join("".join(rng.choice(letters) for _ in range(rng.randint(2, 9))) for _ in range(rng.randint(1, 6)))
            for _ in range(50)
        ],
        "control characters": [
            "".join(chr(rng.choice([*range(1, 9), *range(14, 32)])) for _ in range(rng.randint(1, 4)))
            for _ in range(50)
        ],
        "numbers only": [" ".join(str(rng.randint(0, 99999)) for _ in range(rng.randint(1, 4))) for _ in range(50)],
    }


def rejection(confidences: list[float], correct: list[bool], ood: dict[str, list[float]]) -> list[dict]:
    rows = []
    wrong = [c for c, ok in zip(confidences, correct, strict=True) if not ok]
    right = [c for c, ok in zip(confidences, correct, strict=True) if ok]
    for threshold in THRESHOLDS:
        row = {
            "min_confidence": threshold,
            "wrong_rejected": sum(c < threshold for c in wrong) / max(len(wrong), 1),
            "right_rejected": sum(c < threshold for c in right) / max(len(right), 1),
        }
        for name, values in ood.items():
            row[name] = sum(c < threshold for c in values) / len(values)
        rows.append(row)
    return rows


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", type=Path, required=True)
    ap.add_argument("--eval", type=Path, required=True)
    ap.add_argument("--holdout-from", type=Path, help="the training rows the fit's holdout comes from")
    ap.add_argument("--fit", action="store_true", help="fit and store a temperature if ECE > 0.05")
    ap.add_argument("--json", type=Path, help="also write the figures here")
    args = ap.parse_args()
    examples = read_examples(args.eval)
    parser = Parser.load(args.model, threads=1)
    confidences, correct = scored(parser, examples)
    ece, table = reliability(confidences, correct)
    report: dict = {"model": parser.manifest.model_id, "eval_rows": len(examples), "ece": ece, "reliability": table}
    em = sum(correct) / len(correct)
    print(f"{parser.manifest.model_id}: exact match {em:.4f}, ECE {ece:.4f} (T = {parser.decoder.temperature})")
    if args.fit and ece > 0.05:
        if args.holdout_from is None:
            ap.error("--fit needs --holdout-from (a temperature is never fitted on eval rows)")
        holdout = holdout_rows(args.holdout_from)
        temperature, tried = fit_temperature(args.model, holdout)
        before = next(t for t in tried if t["temperature"] == 1.0)
        after = next(t for t in tried if t["temperature"] == temperature)
        report["fit"] = {"holdout_rows": len(holdout), "tried": tried, "temperature": temperature}
        change = f"holdout ECE {before['ece']:.4f} -> {after['ece']:.4f}"
        print(f"fitted on {len(holdout)} held-out training rows: T = {temperature} ({change})")
        if after["ece"] < before["ece"]:
            raw = Manifest.load(args.model).raw
            raw["calibration"] = {
                "temperature": temperature,
                "fitted_on": f"{len(holdout)} rows held out of {args.holdout_from.name} (seed 42)",
                "holdout_ece": {"before": before["ece"], "after": after["ece"]},
            }
            write_manifest(args.model, raw)
            parser = Parser.load(args.model, threads=1)
            confidences, correct = scored(parser, examples)
            ece, table = reliability(confidences, correct)
            report.update(ece_calibrated=ece, reliability_calibrated=table)
            print(f"eval ECE after calibration: {ece:.4f}")
    ood_scores = {}
    for name, utterances in out_of_domain().items():
        results = parser.parse_batch(utterances, strict=False)
        ood_scores[name] = [r.confidence if r.confidence is not None else 0.0 for r in results]
    report["rejection"] = rejection(confidences, correct, ood_scores)
    print("reliability (eval): bin | rows | mean confidence | exact match")
    for row in report.get("reliability_calibrated", table):
        print(f"  {row['bin']} | {row['rows']} | {row['confidence']:.3f} | {row['accuracy']:.3f}")
    print("rejected at --min-confidence X: " + " | ".join(["wrong", "right", *ood_scores]))
    for row in report["rejection"]:
        print(f"  {row['min_confidence']}: " + " | ".join(f"{v:.0%}" for k, v in row.items() if k != "min_confidence"))
    if args.json:
        args.json.write_text(json.dumps(report, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
