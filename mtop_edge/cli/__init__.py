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


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="mtop-edge")
def cli() -> None:
    """Parse task-oriented utterances into MTOP logical forms, on the edge.

    \b
    mtop-edge parse "set an alarm for 7am"     parse with the embedded default model
    mtop-edge data check train.jsonl          check a data file against the pointer format
    mtop-edge train / export / evaluate / bench
    """


def _register() -> None:
    from mtop_edge.cli import bench_cmd, data_cmd, evaluate_cmd, export_cmd, parse_cmd, train_cmd

    for module in (parse_cmd, data_cmd, train_cmd, evaluate_cmd, export_cmd, bench_cmd):
        cli.add_command(module.command)


_register()


def main() -> None:
    cli(prog_name="mtop-edge")
