"""Option helpers shared by commands."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import fields
from typing import Any

import click


def recipe_overrides(func: Callable) -> Callable:
    """One CLI option per Recipe field (``--max-steps``, ``--markers/--no-markers``, ...)."""
    from mtop_edge.recipe import HELP, Recipe

    for f in reversed(fields(Recipe)):
        flag = f.name.replace("_", "-")
        kind = str(f.type)
        if kind == "bool":
            decls = [f"--{flag}/--no-{flag}"]
            extra: dict[str, Any] = {}
        else:
            decls = [f"--{flag}"]
            extra = {"type": {"int": int, "float": float, "str": str}[kind]}
        func = click.option(*decls, f.name, default=None, help=f"{HELP.get(f.name, '')} [recipe: {f.name}]", **extra)(
            func
        )
    return func
