"""Option helpers shared by commands."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, fields
from enum import Enum
from typing import Any

import click

from mtop_edge.choices import DEVICES, Constraints
from mtop_edge.config import field_types

CONSTRAINTS = list(Constraints)


def config_overrides(config_cls: type, help_texts: dict[str, str], *, skip: tuple[str, ...] = ()) -> Callable:
    """A decorator adding one CLI option per config field (``--max-steps``, ``--markers/--no-markers``).

    Options default to None, meaning "keep the value from the file or the dataclass".
    """

    def decorate(func: Callable) -> Callable:
        types = field_types(config_cls)
        for f in reversed(fields(config_cls)):
            if f.name not in skip:
                func = _option(f.name, types[f.name], help_texts)(func)
        return func

    return decorate


def _option(name: str, kind: type, help_texts: dict[str, str]) -> Callable:
    flag = name.replace("_", "-")
    extra: dict[str, Any] = {}
    if kind is bool:
        decls = [f"--{flag}/--no-{flag}"]
    else:
        decls = [f"--{flag}"]
        is_enum = isinstance(kind, type) and issubclass(kind, Enum)
        extra["type"] = click.Choice([m.value for m in kind]) if is_enum else kind
    return click.option(*decls, name, default=None, help=f"{help_texts.get(name, '')} [{name}]", **extra)


@dataclass(frozen=True)
class Process:
    """What the console entry point knows about its own process (the click context's ``obj``):
    ``standalone`` = it runs mtop-edge's sessions and nothing else (not a test or a notebook)."""

    standalone: bool = False


def device_option(**extra) -> Callable:
    """``--device``: the runtime's devices (`runtime.sessions.Device`)."""
    return click.option(
        "--device",
        type=click.Choice(DEVICES),
        default=DEVICES[0],
        help="Where to run (cuda: onnxruntime-gpu).",
        **extra,
    )


def constraints_option(func: Callable) -> Callable:
    """``--constraints pairs|tree|none``; the older ``--constrain/--no-constrain`` flags still work (hidden)."""

    def pick(ctx: click.Context, param, value):
        if value is False:  # --no-constrain
            ctx.meta["constraints"] = "none"
        return value

    func = click.option("--constrain/--no-constrain", default=None, hidden=True, expose_value=False, callback=pick)(
        func
    )
    return click.option(
        "--constraints",
        type=click.Choice([c.value for c in CONSTRAINTS]),
        default=None,
        help="What decoding may produce: pairs = well-formed trees with the label pairs seen in training, "
        "tree = any well-formed tree, none = the model's raw output.  [default: pairs]",
    )(func)


def min_confidence_option(func: Callable) -> Callable:
    """``--min-confidence X``: parses below X come back with ``understood`` false (the tree still given)."""
    return click.option(
        "--min-confidence",
        type=click.FloatRange(0.0, 1.0),
        default=None,
        help="Mark parses whose confidence (the decoded sequence's probability) is below this as not "
        "understood; the tree is still given.",
    )(func)


def chosen_constraints(ctx: click.Context, value: str | None) -> str:
    """--constraints, else what --no-constrain said, else pairs."""
    return value or ctx.meta.get("constraints") or CONSTRAINTS[0].value


def shared_pool(ctx: click.Context, device: str, threads: int | None):
    """In the console command's own process, one onnxruntime thread pool for all of a parser's
    sessions (returns it for `Parser.load`); None elsewhere (tests, notebooks calling the CLI
    in-process), where other libraries' sessions could not coexist with onnxruntime's global pool.
    """
    process = ctx.find_object(Process)
    if device == "cpu" and process is not None and process.standalone:
        from mtop_edge.runtime import share_thread_pool

        return share_thread_pool(threads)
    return None
