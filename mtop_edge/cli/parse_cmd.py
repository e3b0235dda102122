"""`mtop-edge parse`: utterances in, logical forms out."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import click

from mtop_edge.cli.options import (
    chosen_constraints,
    constraints_option,
    device_option,
    min_confidence_option,
    shared_pool,
)
from mtop_edge.core.source import EMPTY_UTTERANCE
from mtop_edge.errors import InputError, MtopEdgeError


@click.command("parse", context_settings={"show_default": True})
@click.argument("utterance", required=False)
@click.option(
    "--input",
    "input_file",
    type=click.File("rb"),
    help="Read one utterance per line (- for stdin) and stream JSON lines.",
)
@click.option(
    "--model",
    "model_dir",
    type=click.Path(path_type=Path),
    help="Model directory from `mtop-edge export`, or an embedded model's name (`mtop-edge models`) "
    "[default: the embedded default].",
)
@device_option()
@click.option("--threads", type=click.IntRange(min=1), help="CPU threads [default: onnxruntime's].")
@click.option(
    "--json",
    "as_json",
    is_flag=True,
    help="Print one JSON object (utterance, logical_form, intent, slots, model: name@hash of the model that answered).",
)
@click.option(
    "--batch-size",
    type=click.IntRange(min=1),
    help="Utterances decoded together [default: the runtime's Parser.max_batch]; a stream is read in chunks of "
    "8 batches, each sorted by length.",
)
@constraints_option
@click.option("--truncate", is_flag=True, help="Parse only the first words the model can point to (flagged).")
@min_confidence_option
@click.option("--ray", "on_ray", is_flag=True, help="Parse a corpus on Ray Data: UTTERANCE is a file or directory.")
@click.option("--output", type=click.Path(file_okay=False, path_type=Path), help="--ray: a directory for the records.")
@click.option("--actors", default=1, type=click.IntRange(min=1), help="--ray: parsing actors, one model each.")
@click.option("--address", help="--ray: join this Ray cluster (default: start a local one).")
@click.pass_context
def command(
    ctx,
    utterance,
    input_file,
    model_dir,
    device,
    threads,
    as_json,
    batch_size,
    constraints,
    truncate,
    min_confidence,
    on_ray,
    output,
    actors,
    address,
) -> None:
    """Parse UTTERANCE into a logical form, or a stream of utterances.

    \b
    mtop-edge parse "set an alarm for 7am"
    mtop-edge parse --json "call mom"
    mtop-edge parse - < utterances.txt        one JSON object per input line
    mtop-edge parse --ray corpus/ --output parsed/ --actors 4
    """
    if on_ray:
        _parse_on_ray(ctx, utterance, output, model_dir, device, threads, truncate, min_confidence, actors, address)
        return
    from mtop_edge.runtime import Parser

    if input_file is None and utterance == "-":
        input_file = click.open_file("-", "rb")
        utterance = None
    if (utterance is None) == (input_file is None):
        raise click.UsageError("give one UTTERANCE, or --input FILE / - for a stream")
    if utterance is not None and not utterance.strip():
        raise InputError(EMPTY_UTTERANCE)
    parser = Parser.load(
        model_dir,
        device=device,
        threads=threads,
        pool=shared_pool(ctx, device, threads),
        constraints=chosen_constraints(ctx, constraints),
        max_batch=batch_size,
        min_confidence=min_confidence,
    )
    if utterance is not None:
        result = parser.parse(utterance, truncate=truncate)
        if as_json:  # one rule for both outputs: a malformed parse (only with --constraints none) exits 1
            click.echo(json.dumps({**result.to_json(), "model": parser.manifest.model_id}, ensure_ascii=False))
            if not result.ok:
                sys.exit(1)
        elif result.ok:
            notes = ["truncated"] * result.truncated
            if not result.understood:
                notes.append(f"not understood: confidence {result.confidence:.3f} < {min_confidence}")
            click.echo(result.logical_form + "".join(f"  ({note})" for note in notes))
        else:  # only possible with --constraints none: the model's output was not a tree
            raise MtopEdgeError(result.error)
        return
    failures = _stream(parser, input_file, 8 * parser.max_batch, truncate)
    if failures:
        click.echo(f"{failures} line(s) could not be parsed (see their error records)", err=True)
        sys.exit(1)


def _stream(parser, handle, chunk: int, truncate: bool) -> int:
    """Parse a line-per-utterance stream in chunks of lines; a bad line yields an error record, not a stop."""
    from mtop_edge.lines import parse_records, read_line

    failures = 0
    pending: list = []

    def flush() -> None:
        nonlocal failures
        for record in parse_records(parser, pending, truncate):
            failures += "error" in record
            click.echo(json.dumps(record, ensure_ascii=False))
        pending.clear()

    for number, raw in enumerate(handle, start=1):
        pending.append(({"line": number}, *read_line(raw.rstrip(b"\r\n"))))
        if len(pending) >= chunk:
            flush()
    flush()
    return failures


def _parse_on_ray(ctx, source, output, model_dir, device, threads, truncate, min_confidence, actors, address) -> None:
    """A corpus on Ray Data (mtop_edge/corpus.py); exits 1 when some lines failed."""
    from mtop_edge.errors import require

    require("ray", "ray")
    from mtop_edge.corpus import CorpusOptions, parse_corpus

    if source is None or output is None:
        raise click.UsageError("--ray needs an INPUT file or directory and --output DIR")
    options = CorpusOptions(
        model=str(model_dir) if model_dir else None,
        device=device,
        threads=threads or 1,
        constraints=chosen_constraints(ctx, ctx.params.get("constraints")),
        truncate=truncate,
        min_confidence=min_confidence,
    )
    path = Path(source)
    if not path.exists():
        raise click.BadParameter(f"{source}: no such file or directory", param_hint="INPUT")
    summary = parse_corpus(path, output, options, actors=actors, address=address, log=lambda s: click.echo(s, err=True))
    if summary["failed"]:
        click.echo(f"{summary['failed']} line(s) could not be parsed (see their error records)", err=True)
        sys.exit(1)
