"""`mtop-edge train`: fine-tune a parser with a recipe."""

from __future__ import annotations

import os
from pathlib import Path

import click

from mtop_edge.cli.options import config_overrides
from mtop_edge.training.recipe import HELP, Recipe


@click.command("train", context_settings={"show_default": True})
@click.option(
    "--recipe",
    "recipe_path",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="TOML recipe (training/*.toml); fields below override it.",
)
@click.option(
    "--data",
    required=True,
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="Training rows (MTOP TSV or JSONL).",
)
@click.option(
    "--eval-data",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="Eval rows; without it a seeded slice of --data is held out.",
)
@click.option(
    "--out",
    required=True,
    type=click.Path(file_okay=False, path_type=Path),
    help="Output directory: the trained checkpoint (+ checkpoints/ to resume from).",
)
@click.option("--resume", is_flag=True, help="Continue from the last checkpoint in OUT.")
@click.option("--overwrite", is_flag=True, help="Delete a non-empty OUT and start over.")
@config_overrides(Recipe, HELP)
def command(recipe_path, data, eval_data, out, resume, overwrite, **overrides) -> None:
    """Fine-tune a pointer-format parser (Hugging Face Seq2SeqTrainer).

    Runs on one device as is, or on many under a standard launcher, e.g.
    `torchrun --nproc-per-node 4 -m mtop_edge train ...`. bf16 autocast is used on
    CUDA (never fp16: T5 overflows).
    """
    from mtop_edge.training.train import train

    recipe = Recipe.load(recipe_path, **overrides)
    summary = train(recipe, data, out, eval_data=eval_data, resume=resume, overwrite=overwrite)
    if int(os.environ.get("RANK", "0")) != 0:
        return
    ev = summary["eval"]
    click.echo(
        f"done: {summary['global_step']} steps in {summary['minutes']} min; best checkpoint eval "
        f"loss {ev['loss']:.4f}, exact match {ev['exact_match']:.4f} on {summary['eval_rows']} rows -> {out}"
    )
