"""`mtop-edge data`: inspect MTOP data files."""

from __future__ import annotations

import json
from pathlib import Path

import click


@click.group("data")
def command() -> None:
    """Inspect MTOP data files (official 8-column TSV or JSON lines)."""


@command.command("check")
@click.argument("path", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object instead of a summary.")
@click.option("--strict", is_flag=True, help="Fail on the first malformed row instead of skipping it.")
@click.option(
    "--show",
    default=5,
    show_default=True,
    type=click.IntRange(min=0),
    help="How many malformed/unaligned rows to list.",
)
def check_command(path: Path, as_json: bool, strict: bool, show: int) -> None:
    """Count rows, malformed rows and pointer-format coverage; list the labels.

    Coverage is the share of well-formed rows whose gold tree survives
    tree -> pointers -> tree.
    """
    from mtop_edge.data import read_dataset
    from mtop_edge.datacheck import check
    from mtop_edge.errors import DataError

    dataset = read_dataset(path, strict=strict)
    report = check(dataset, show=show)
    if not dataset.examples:  # nothing usable (junk, or only malformed rows) is a failure, not an "empty" success
        first = f"; first: {dataset.errors[0]}" if dataset.errors else ""
        raise DataError(f"no well-formed rows ({len(dataset.errors)} malformed{first})", path)
    if as_json:
        click.echo(json.dumps(report.to_json(), ensure_ascii=False))
        return
    click.echo(f"{report.path}: {report.rows} rows ({report.format}), {report.malformed} malformed")
    for row in report.first_malformed:
        click.echo(f"  {report.path}:{row['line']}: {row['error']}")
    click.echo(f"aligned: {report.aligned} of {report.rows - report.malformed} (coverage {report.coverage:.4f})")
    click.echo(
        f"labels: {len(report.intents)} intents, {len(report.slots)} slots; "
        f"largest word index needed: {report.max_pointer_index}; most words: {report.max_words}"
    )
    if report.first_unaligned:
        click.echo("first unaligned rows:")
        for row in report.first_unaligned:
            click.echo(f"  {report.path}:{row['line']}: {row['reason']}")
            click.echo(f"    {row['utterance']}")
            click.echo(f"    {row['logical_form']}")
