"""`mtop-edge export`: a trained checkpoint -> the model directory the runtime loads."""

from __future__ import annotations

import json
from pathlib import Path

import click

from mtop_edge.cli.options import config_overrides
from mtop_edge.export.options import HELP, ExportOptions, Precision


@click.command("export", context_settings={"show_default": True})
@click.option(
    "--model",
    "checkpoint",
    required=True,
    help="Checkpoint from `mtop-edge train` or in the DAMP pointer format (`<pt-N>` added tokens): "
    "a directory or a hub id.",
)
@click.option("--out", required=True, type=click.Path(path_type=Path), help="Model directory to write.")
@click.option(
    "--profile",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="Export profile (export/*.toml); options below override it.",
)
@click.option("--quantize", type=click.Choice([p.value for p in Precision]), help=HELP["quantize"] + " [default: int8]")
@click.option(
    "--data",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="Rows for the parity check (default: the in-repo eval sample).",
)
@click.option(
    "--trim-input-data",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="Training rows to take the seen source pieces from, for --trim-input on a checkpoint "
    "without source_vocab.json.",
)
@click.option("--overwrite", is_flag=True, help="Replace an existing model directory.")
@click.option("--model-name", help="The model's name in the manifest [default: the checkpoint directory's name].")
@click.option("--threads", type=click.IntRange(min=1), help="CPU threads for the parity check.")
@click.option("--json", "as_json", is_flag=True, help="Print the manifest as JSON at the end.")
@config_overrides(ExportOptions, HELP, skip=("quantize",))
def command(
    checkpoint, out, profile, quantize, data, trim_input_data, overwrite, model_name, threads, as_json, **overrides
):
    """Export a checkpoint to trimmed, quantized ONNX with cached past key/values.

    Writes encoder_model.onnx and decoder_with_past_model.onnx (plus the first step's
    decoder_model.onnx with --layout separate, optimum's layout; or one decoder_model_merged.onnx
    with --layout merged; and twins of the step for calls of a few rows: without row groups,
    4-bit with --decoder-weights per-batch), the source tokenizer, manifest.json and a model card.
    Ends with a parity check against PyTorch; nothing is written if anything fails.
    """
    from mtop_edge.export import export_model

    options = ExportOptions.load(profile, quantize=quantize, **overrides)
    log = (lambda _: None) if as_json else click.echo
    manifest = export_model(
        checkpoint,
        out,
        options,
        data=data,
        trim_input_data=trim_input_data,
        overwrite=overwrite,
        threads=threads,
        name=model_name,
        profile=str(profile) if profile else None,
        log=log,
    )
    if as_json:
        click.echo(json.dumps(manifest))
        return
    sizes = ", ".join(f"{name} {size / 1e6:.2f} MB" for name, size in manifest["sizes"].items())
    click.echo(f"sizes: {sizes}; total {manifest['total_bytes'] / 1e6:.2f} MB")
    click.echo("parity: " + json.dumps(manifest["parity"]))
    click.echo(f"wrote {out}")
