"""`mtop-edge bench`: mtop-edge beside PyTorch, optimum and CTranslate2, in one run."""

from __future__ import annotations

from pathlib import Path

import click

from mtop_edge.bench.engines import DEFAULT_ENGINES, ENGINES
from mtop_edge.bench.options import BenchOptions
from mtop_edge.cli.options import device_option
from mtop_edge.data import EVAL_SAMPLE

DEFAULTS = BenchOptions()


def _int_list(ctx, param, value: str) -> list[int]:
    try:
        numbers = [int(v) for v in value.split(",") if v.strip()]
    except ValueError:
        raise click.BadParameter(f"expected comma-separated integers, got {value!r}") from None
    if not numbers or min(numbers) < 1:
        raise click.BadParameter("expected positive integers")
    return numbers


def _engines(ctx, param, value: str | None) -> list[str] | None:
    if value is None:
        return None
    names = [v.strip() for v in value.split(",") if v.strip()]
    unknown = [n for n in names if n not in ENGINES]
    if unknown:
        raise click.BadParameter(f"unknown engine(s) {', '.join(unknown)}; choose from {', '.join(ENGINES)}")
    return names


@click.command("bench", context_settings={"show_default": True})
@click.option(
    "--model",
    "models",
    multiple=True,
    type=click.Path(exists=True, file_okay=False, path_type=Path),
    help="A trained checkpoint (from `mtop-edge train`); repeat for several.",
)
@click.option(
    "--reference-shape/--no-reference-shape",
    default=True,
    help="Also an mT5-small-shaped model with random weights (forced decoding steps).",
)
@click.option(
    "--data",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    default=EVAL_SAMPLE,
    help="Eval rows whose utterances every engine parses.",
)
@click.option(
    "--profile",
    "profiles",
    multiple=True,
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="Also the mtop-edge runtime on an export made with this profile (engine mtop-edge@NAME); repeat to "
    "compare export layouts.",
)
@click.option(
    "--engines",
    callback=_engines,
    help=f"Comma-separated engines [default on cpu: all but torch-bf16; on cuda: {','.join(DEFAULT_ENGINES['cuda'])}]",
)
@click.option("--threads", default="1,2", callback=_int_list, help="Thread settings, each measured.")
@click.option("--batch-sizes", default="1,8,32,128", callback=_int_list, help="Batch sizes for throughput.")
@click.option(
    "--rows", default=DEFAULTS.rows, type=click.IntRange(min=1), help="Utterances timed one by one (batch 1)."
)
@click.option(
    "--throughput-rows",
    default=DEFAULTS.throughput_rows,
    type=click.IntRange(min=1),
    help="Utterances per batch size (fewer make batch-32 figures move by +-15% between runs).",
)
@click.option(
    "--warmup", default=DEFAULTS.warmup, type=click.IntRange(min=0), help="Untimed utterances per engine first."
)
@device_option()
@click.option(
    "--out",
    type=click.Path(file_okay=False, path_type=Path),
    default=Path("benchmarks/results"),
    help="Where the JSON, Markdown and PNG files go.",
)
@click.option(
    "--work",
    type=click.Path(file_okay=False, path_type=Path),
    default=Path("benchmarks/.work"),
    help="Cache of converted models (per checkpoint hash).",
)
def command(
    models,
    reference_shape,
    data,
    profiles,
    engines,
    threads,
    batch_sizes,
    rows,
    throughput_rows,
    warmup,
    device,
    out,
    work,
) -> None:
    """Latency, throughput, load time, memory, size and exact match per engine, timed in turns.

    Engines: PyTorch generate, optimum ORTModelForSeq2SeqLM (fp32, int8), CTranslate2 (int8, fp32;
    with and without a vocabulary map) and mtop-edge (int8, fp32; constrained and not).
    """
    from mtop_edge.bench.run import run_bench

    options = BenchOptions(
        models=list(models),
        reference_shape=reference_shape,
        data=data,
        engines=engines or list(DEFAULT_ENGINES[device]),
        threads=threads,
        batch_sizes=batch_sizes,
        rows=rows,
        throughput_rows=throughput_rows,
        warmup=warmup,
        out=out,
        work=work,
        device=device,
        profiles=list(profiles),
    )
    result = run_bench(options, log=click.echo)
    from mtop_edge.bench.report import markdown

    click.echo(markdown(result))
    for kind, path in result["files"].items():
        click.echo(f"{kind}: {path}")
