"""Exact match against batch-1 latency and file size, one point per model tier.

    python benchmarks/tiers_plot.py BENCH_JSON... [--model NAME=DIR] [--measure DIR] [--out PNG]

Latency and size come from `mtop-edge bench` runs (their JSON: the int8 mtop-edge engine at one
thread, batch 1), or, for an export whose checkpoint is not at hand (``--measure DIR``: the tiny
tier), from timing it here the bench's way (the eval sample's first 200 utterances one by one after
10 untimed, one thread, p50); exact match from each model's manifest (``evaluation.eval``: all 2,235 eval rows,
int8, constrained) where the bench measured a trained model, and from the published card for the
mT5-small reference (0.7445), whose weights are not available here: its point uses the latency and
size the bench measured on a model of its shape.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

PUBLISHED = {"mt5-small-shape": ("mT5-small (published EM)", 0.7445)}


def points(bench: dict, models: dict[str, Path]) -> list[dict]:
    rows = [
        r
        for r in bench["rows"]
        if r["engine"] == "mtop-edge-int8" and r["batch_size"] == 1 and r["threads"] == 1 and not r["variant"]
    ]
    if not rows:  # random-weight shapes are measured unconstrained
        rows = [r for r in bench["rows"] if r["engine"] == "mtop-edge-int8" and r["batch_size"] == 1]
    out = []
    for row in rows:
        name = row["model"]
        if name in PUBLISHED:
            label, em = PUBLISHED[name]
        elif name in models:
            manifest = json.loads((models[name] / "manifest.json").read_text())
            label, em = manifest["name"], manifest["evaluation"]["eval"]["exact_match"]
        else:
            continue
        out.append({"label": label, "ms": row["p50_ms"], "mb": row["size_mb"], "em": em})
    return out


def measured(directory: Path) -> dict:
    """One point timed in this process, as the bench times batch 1 (serve_load.in_process_p50)."""
    from serve_load import in_process_p50, sample_bodies

    from mtop_edge.manifest import Manifest

    manifest = Manifest.load(directory)
    utterances, _ = sample_bodies(0)
    size = sum(p.stat().st_size for p in Path(manifest.directory).iterdir() if p.is_file()) / 1e6
    em = manifest.raw["evaluation"]["eval"]["exact_match"]
    ms = in_process_p50(str(manifest.directory), 1, utterances)
    return {"label": manifest.raw["name"], "ms": round(ms, 2), "mb": round(size, 1), "em": em}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("bench", type=Path, nargs="+", help="bench runs' JSON")
    ap.add_argument("--model", action="append", default=[], metavar="NAME=DIR", help="a bench model's export")
    ap.add_argument("--measure", action="append", default=[], metavar="DIR", help="an export timed here")
    ap.add_argument("--out", type=Path, default=Path("benchmarks/results/tiers.png"))
    args = ap.parse_args()
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib import ticker

    models = {name: Path(path) for name, path in (m.split("=", 1) for m in args.model)}
    data = [p for bench in args.bench for p in points(json.loads(bench.read_text()), models)]
    data += [measured(Path(directory)) for directory in args.measure]
    figure, (left, right) = plt.subplots(1, 2, figsize=(10, 4), sharey=True)
    for axis, key, label in ((left, "ms", "batch-1 latency, p50 (ms, one thread)"), (right, "mb", "files (MB)")):
        for point in data:
            axis.scatter(point[key], point["em"], s=60)
            axis.annotate(
                point["label"], (point[key], point["em"]), textcoords="offset points", xytext=(6, 4), fontsize=8
            )
        axis.set_xlabel(label)
        axis.set_xscale("log")
        values = [point[key] for point in data]
        axis.set_xlim(min(values) * 0.7, max(values) * 2.5)  # room for the labels
        axis.xaxis.set_major_formatter(ticker.ScalarFormatter())
        axis.xaxis.set_minor_formatter(ticker.NullFormatter())
        axis.grid(True, alpha=0.3)
    left.set_ylabel("eval exact match (MTOP en, int8, constrained)")
    figure.suptitle(f"mtop-edge tiers ({', '.join(bench_name(b) for b in args.bench)})")
    figure.tight_layout()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(args.out, dpi=120)
    print(json.dumps(data, indent=1))


def bench_name(path: Path) -> str:
    return path.parent.name if path.name == "results.json" else path.stem


if __name__ == "__main__":
    main()
