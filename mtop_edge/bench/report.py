"""Benchmark output: one JSON file per run, a Markdown table, and PNG plots."""

from __future__ import annotations

import json
from collections import defaultdict
from pathlib import Path

REFERENCE = "mtop-edge-int8"


def _label(row: dict) -> str:
    return row["engine"] + (f" ({row['variant']})" if row["variant"] else "")


def best_rows(rows: list[dict], model: str) -> dict[str, dict]:
    """Per engine label: the batch-1 row of its fastest thread setting (by p50)."""
    best: dict[str, dict] = {}
    for row in rows:
        if row["model"] == model and row["batch_size"] == 1:
            label = _label(row)
            if label not in best or row["p50_ms"] < best[label]["p50_ms"]:
                best[label] = row
    return best


def reference_row(best: dict[str, dict]) -> dict | None:
    """mtop-edge int8 as users run it (constrained), or unconstrained where weights are random."""
    return best.get(REFERENCE) or best.get(f"{REFERENCE} (unconstrained)")


def markdown(result: dict) -> str:
    rows = result["rows"]
    machine = result["machine"]
    models = list(dict.fromkeys(r["model"] for r in rows))
    batch_sizes = sorted({r["batch_size"] for r in rows})
    lines = [
        f"Run {result['created']} on {machine.get('cpu')} ({machine.get('cores')} cores; "
        f"{', '.join(machine.get('cpu_flags', []))}), device {result['settings']['device']}; "
        f"{result['settings']['rows']} eval utterances for batch-1 latency, "
        f"{result['settings']['throughput_rows']} per batch size for throughput; {result['minutes']} min.",
        "",
    ]
    for model in models:
        best = best_rows(rows, model)
        reference = reference_row(best)
        forced = next((r["forced_steps"] for r in rows if r["model"] == model and r["forced_steps"]), None)
        lines.append(f"### {model}")
        lines.append("")
        if forced:
            lines.append(
                f"Random weights: every engine decodes exactly {forced} steps (the mean MTOP target length, "
                "EOS included); exact match is not meaningful and constrained decoding does not apply."
            )
            lines.append("")
        header = [
            "engine",
            "threads",
            "p50 ms",
            "p90 ms",
            "p99 ms",
            "p50 vs mtop-edge int8",
            *[f"utt/s b{b}" for b in batch_sizes],
            "load s",
            "first parse ms",
            "peak RSS MB",
            "size MB",
            "EM",
        ]
        if best:  # runs without batch 1 have no latency table
            lines.append("| " + " | ".join(header) + " |")
            lines.append("|" + "---|" * len(header))
        throughput = defaultdict(dict)
        for row in rows:
            if row["model"] == model:
                current = throughput[_label(row)].get(row["batch_size"], 0)
                throughput[_label(row)][row["batch_size"]] = max(current, row["utterances_per_s"])
        for label, row in sorted(best.items(), key=lambda item: item[1]["p50_ms"]):
            ratio = f"{row['p50_ms'] / reference['p50_ms']:.2f}x" if reference else "-"
            em = "-" if row["exact_match"] is None else f"{row['exact_match']:.4f}"
            cells = [
                label,
                row["threads"],
                f"{row['p50_ms']:.1f}",
                f"{row['p90_ms']:.1f}",
                f"{row['p99_ms']:.1f}",
                ratio,
                *[f"{throughput[label].get(b, float('nan')):.1f}" for b in batch_sizes],
                f"{row['load_s']:.2f}",
                f"{row['first_parse_ms']:.0f}",
                f"{row['peak_rss_mb']:.0f}",
                f"{row['size_mb']:.1f}",
                em,
            ]
            lines.append("| " + " | ".join(str(c) for c in cells) + " |")
        ratios = _throughput_ratios(throughput, batch_sizes)
        lines.extend(ratios[1:] if ratios and not lines[-1] else ratios)  # one blank line before it
        lines.append("")
        lines.append("Every setting (p50 ms per batch / utterances per second):")
        lines.append("")
        threads = sorted({r["threads"] for r in rows if r["model"] == model})
        header = ["engine", *[f"{t} thr, b{b}" for t in threads for b in batch_sizes]]
        lines.append("| " + " | ".join(header) + " |")
        lines.append("|" + "---|" * len(header))
        cell = {(_label(r), r["threads"], r["batch_size"]): r for r in rows if r["model"] == model}
        for label in sorted({_label(r) for r in rows if r["model"] == model}):
            values = []
            for t in threads:
                for b in batch_sizes:
                    r = cell.get((label, t, b))
                    values.append(f"{r['p50_ms']:.1f} / {r['utterances_per_s']:.0f}" if r else "-")
            lines.append("| " + " | ".join([label, *values]) + " |")
        lines.append("")
    return "\n".join(lines)


def _throughput_ratios(throughput: dict[str, dict[int, float]], batch_sizes) -> list[str]:
    """A table of mtop-edge int8's utterances/s ÷ each other engine's, per batch size above 1 (best settings each)."""
    batched = [b for b in batch_sizes if b > 1]
    reference = next((label for label in (REFERENCE, f"{REFERENCE} (unconstrained)") if label in throughput), None)
    if not batched or reference is None:
        return []
    ours = throughput[reference]
    lines = [
        "",
        f"Throughput of {reference} ÷ each engine's (utterances/s, each at its best thread setting):",
        "",
        "| engine | " + " | ".join(f"b{b}" for b in batched) + " |",
        "|" + "---|" * (len(batched) + 1),
    ]
    for label, values in sorted(throughput.items()):
        if label != reference:
            cells = [f"{ours[b] / values[b]:.2f}x" if values.get(b) and ours.get(b) else "-" for b in batched]
            lines.append("| " + " | ".join([label, *cells]) + " |")
    return lines


def plots(result: dict, stem: Path) -> list[Path]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = result["rows"]
    models = list(dict.fromkeys(r["model"] for r in rows))
    written = []
    fig, axes = plt.subplots(len(models), 1, figsize=(10, 3.2 * len(models)), squeeze=False)
    for ax, model in zip(axes[:, 0], models, strict=True):
        best = sorted(best_rows(rows, model).items(), key=lambda item: item[1]["p50_ms"])
        ax.boxplot([r["latencies_ms"] for _, r in best], orientation="horizontal", showfliers=False)
        ax.set_yticks(range(1, len(best) + 1), [f"{label} [{r['threads']} thr]" for label, r in best], fontsize=7)
        ax.set_xscale("log")
        ax.set_xlabel("batch-1 latency, ms (log)")
        ax.set_title(model, fontsize=9)
    fig.tight_layout()
    path = stem.with_name(stem.name + "-latency.png")
    fig.savefig(path, dpi=110)
    plt.close(fig)
    written.append(path)

    fig, axes = plt.subplots(1, len(models), figsize=(6 * len(models), 4.2), squeeze=False)
    for ax, model in zip(axes[0], models, strict=True):
        series = defaultdict(dict)
        for r in rows:
            if r["model"] == model:
                key = _label(r)
                series[key][r["batch_size"]] = max(series[key].get(r["batch_size"], 0), r["utterances_per_s"])
        ax.set_prop_cycle(color=plt.cm.tab20.colors)  # 11 engines: more colors than the default cycle
        for label, points in sorted(series.items()):
            sizes = sorted(points)
            ax.plot(sizes, [points[b] for b in sizes], marker="o", label=label)
        ax.set_xscale("log", base=2)
        ax.set_yscale("log")
        ax.set_xlabel("batch size")
        ax.set_ylabel("utterances / s (best thread setting)")
        ax.set_title(model, fontsize=9)
        ax.legend(fontsize=6)
    fig.tight_layout()
    path = stem.with_name(stem.name + "-throughput.png")
    fig.savefig(path, dpi=110)
    plt.close(fig)
    written.append(path)
    return written


def write(result: dict, out: Path) -> dict[str, Path]:
    out.mkdir(parents=True, exist_ok=True)
    stem = out / f"bench-{result['created'].replace(':', '').replace('-', '')}"
    json_path = stem.with_suffix(".json")
    json_path.write_text(json.dumps(result, indent=1) + "\n")
    md_path = stem.with_suffix(".md")
    md_path.write_text(markdown(result) + "\n")
    written = {"json": json_path, "markdown": md_path}
    for path in plots(result, stem):
        written[path.stem.rsplit("-", 1)[1]] = path
    result["files"] = {k: str(v) for k, v in written.items()}
    return written
