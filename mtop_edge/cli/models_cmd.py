"""`mtop-edge models`: the models this installation embeds, with their size, speed and scores."""

from __future__ import annotations

import json

import click


def _row(name: str, default: str) -> dict:
    from mtop_edge.manifest import MODELS_DIR, Manifest

    manifest = Manifest.load(MODELS_DIR / name)
    raw = manifest.raw
    evaluation = raw.get("evaluation", {})
    full = evaluation.get("eval", {})
    return {
        "name": name,
        "default": name == default,
        "id": manifest.model_id,
        "kind": raw.get("kind", "t5"),
        "size_mb": round(raw.get("total_bytes", 0) / 1e6, 1),
        "exact_match": full.get("exact_match"),
        "eval_rows": full.get("n"),
        "batch1_ms": raw.get("speed", {}).get("batch1_p50_ms"),
        "batch32_utterances_per_s": raw.get("speed", {}).get("batch32_utterances_per_s"),
    }


@click.command("models")
@click.option("--json", "as_json", is_flag=True, help="One JSON object per model.")
def command(as_json: bool) -> None:
    """List the embedded models (`--model NAME` picks one): size, speed, eval exact match.

    Speed and exact match are the figures recorded in each model's manifest (MTOP English eval,
    int8, constrained; batch-1 p50 at one thread), not measured now.
    """
    from mtop_edge.manifest import DEFAULT_MODEL, embedded_models

    rows = [_row(name, DEFAULT_MODEL) for name in embedded_models()]
    if as_json:
        for row in rows:
            click.echo(json.dumps(row))
        return

    def figure(value, spec: str) -> str:
        return "-" if value is None else format(value, spec)

    click.echo(f"{'model':<18} {'kind':<16} {'size':>8} {'batch 1':>9} {'32-row':>10} {'eval EM':>8}")
    for row in rows:
        name = row["name"] + (" *" if row["default"] else "")
        click.echo(
            f"{name:<18} {row['kind']:<16} {row['size_mb']:>6.1f}MB {figure(row['batch1_ms'], '.1f'):>7}ms "
            f"{figure(row['batch32_utterances_per_s'], '.0f'):>6}/s {figure(row['exact_match'], '.4f'):>8}"
        )
    click.echo("* the default (mtop-edge parse without --model)")
