"""The `mtop-edge` command line. One module per command; heavy libraries load inside commands."""

from __future__ import annotations

import click

from mtop_edge import __version__
from mtop_edge.errors import MtopEdgeError


class _UserError(click.ClickException):
    """A library error shown as one line, with the exit code the library chose."""

    def __init__(self, error: MtopEdgeError) -> None:
        super().__init__(str(error))
        self.exit_code = error.exit_code


class _Group(click.Group):
    """Maps the library's typed errors to one-line messages and exit codes (no tracebacks)."""

    def invoke(self, ctx: click.Context):
        try:
            return super().invoke(ctx)
        except MtopEdgeError as exc:
            raise _UserError(exc) from None


def _print_version(ctx: click.Context, param, value: bool) -> None:
    """The package version and the embedded model `parse` uses without --model (name@hash; no onnxruntime loaded)."""
    if not value or ctx.resilient_parsing:
        return
    import json

    from mtop_edge.manifest import DEFAULT_MODEL_DIR, MANIFEST_FILE, model_id

    try:
        model = model_id(json.loads((DEFAULT_MODEL_DIR / MANIFEST_FILE).read_text()))
    except (OSError, ValueError, AttributeError):
        model = "none embedded"
    click.echo(f"mtop-edge {__version__}\ndefault model: {model}")
    ctx.exit()


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.option(
    "--version",
    is_flag=True,
    expose_value=False,
    is_eager=True,
    callback=_print_version,
    help="Show the version and the embedded default model (name@hash), and exit.",
)
def cli() -> None:
    """Parse task-oriented utterances into MTOP logical forms, on the edge.

    \b
    mtop-edge parse "set an alarm for 7am"     parse with the embedded default model
    mtop-edge models                          the embedded models (--model NAME), size, speed, scores
    mtop-edge data check train.jsonl          check a data file against the pointer format
    mtop-edge serve                           the parser over HTTP (the serve extra)
    mtop-edge train / export / evaluate / bench
    """


def _register() -> None:
    from mtop_edge.cli import (
        bench_cmd,
        data_cmd,
        evaluate_cmd,
        export_cmd,
        models_cmd,
        parse_cmd,
        serve_cmd,
        train_cmd,
    )

    for module in (parse_cmd, models_cmd, serve_cmd, data_cmd, train_cmd, evaluate_cmd, export_cmd, bench_cmd):
        cli.add_command(module.command)


_register()


def main() -> None:
    from mtop_edge.cli.options import Process

    cli(prog_name="mtop-edge", obj=Process(standalone=True))
