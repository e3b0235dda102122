"""`mtop-edge evaluate`: exact match, intent accuracy and slot F1 of a model on a data file."""

from __future__ import annotations

import json
from pathlib import Path

import click

from mtop_edge.cli.options import chosen_constraints, constraints_option, device_option, shared_pool

ENGINES = ("torch", "onnx")


@click.command("evaluate", context_settings={"show_default": True})
@click.option(
    "--model",
    "model_dir",
    required=True,
    type=click.Path(file_okay=False, path_type=Path),
    help="torch: a checkpoint (from `mtop-edge train`, or in the DAMP pointer format); "
    "onnx: a directory from `mtop-edge export`, or an embedded model's name (`mtop-edge models`).",
)
@click.option(
    "--data",
    required=True,
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="Rows to score (MTOP TSV or JSONL).",
)
@click.option("--engine", type=click.Choice(ENGINES), default="torch", help="Which engine decodes.")
@click.option("--limit", type=click.IntRange(min=1), help="Read only the first N rows (malformed ones count).")
@click.option("--strict", is_flag=True, help="Fail on the first malformed row instead of reporting and skipping it.")
@click.option("--batch-size", type=click.IntRange(min=1), default=32)
@device_option()
@click.option("--threads", type=click.IntRange(min=1), help="CPU threads (default: the library's).")
@constraints_option
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
@click.option(
    "--record",
    metavar="NAME",
    help="onnx: also store the figures in the model's manifest under evaluation.NAME (what its card and "
    "the shipped-model test quote).",
)
@click.pass_context
def command(ctx, model_dir, data, engine, limit, strict, batch_size, device, threads, constraints, as_json, record):
    """Greedy-decode every row and report exact match, intent accuracy, slot F1,
    well-formed rate and examples/s."""
    from mtop_edge.core.spec import SourceFormat

    constraints = chosen_constraints(ctx, constraints)
    from mtop_edge.data import first_rows, read_dataset
    from mtop_edge.errors import DataError
    from mtop_edge.evaluate import evaluate

    dataset = first_rows(read_dataset(data, strict=strict), limit)
    for error in dataset.errors:  # skipped, never silently: each one named on stderr
        click.echo(f"skipped {error}", err=True)
    examples = dataset.examples
    if not examples:
        raise DataError(f"no usable rows ({len(dataset.errors)} malformed)", data)
    if engine == "torch":
        from mtop_edge.modeling.torch_engine import TorchParser

        torch_parser = TorchParser(model_dir, device=device, threads=threads)
        parse_batch, spec, source = torch_parser.parse_batch, torch_parser.spec, torch_parser.source

        def generate(sources, n_words):
            return [row[1:] for row in torch_parser.generate_ids(sources)]
    else:
        from mtop_edge.runtime import Parser

        pool = shared_pool(ctx, device, threads)
        parser = Parser.load(model_dir, device=device, threads=threads, pool=pool, constraints=constraints)
        parse_batch, spec, source = parser.parse_trees, parser.spec, parser.source

        def generate(sources, n_words):
            decoded = parser.decode_ids(sources, n_words)
            return [parser.original_ids(ids) for ids in decoded.ids]

    result = evaluate(parse_batch, examples, batch_size=batch_size, progress=not as_json)
    damp_figures = {}
    if spec.source_format is SourceFormat.SPACED:  # a DAMP-format model: also DAMP's own string exact match
        from mtop_edge.formats.damp import string_exact_match

        for key, gold in (("damp_string_em_gold_spacing", True), ("damp_string_em", False)):
            damp_figures[key] = round(
                string_exact_match(
                    generate, spec, source.pieces.tokenizer, examples, gold_spacing=gold, batch_size=batch_size
                ),
                4,
            )
    report = {
        "engine": engine,
        "model": str(model_dir),
        "data": str(data),
        "device": device,
        "constraints": constraints if engine == "onnx" else None,
        **result.to_json(),
        **damp_figures,
        "malformed_rows": len(dataset.errors),
    }
    if record:
        if engine != "onnx":
            raise click.UsageError("--record needs --engine onnx (it writes into an exported model's manifest)")
        from mtop_edge.manifest import record_evaluation

        record_evaluation(
            parser.manifest.directory,
            record,
            {k: v for k, v in report.items() if k not in ("model", "examples_per_s", "seconds")},
        )
    if as_json:
        click.echo(json.dumps(report))
        return
    s = result.scores
    click.echo(
        f"{engine} on {s.n} rows of {data} ({len(dataset.errors)} malformed, skipped): exact match "
        f"{s.exact_match:.4f}, intent accuracy "
        f"{s.intent_accuracy:.4f}, slot F1 {s.slot_f1:.4f}, well-formed {s.well_formed:.4f}, "
        f"{result.examples_per_s:.1f} examples/s"
    )
    if damp_figures:
        click.echo(
            f"DAMP string exact match: {damp_figures['damp_string_em_gold_spacing']:.4f} on sources spaced with the "
            f"gold form (as DAMP reports), {damp_figures['damp_string_em']:.4f} spaced by our word splitter"
        )
