"""Option helpers shared by commands."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import fields
from typing import Any

import click


def config_overrides(config_cls: type, help_texts: dict[str, str], *, skip: tuple[str, ...] = ()) -> Callable:
    """A decorator adding one CLI option per config field (``--max-steps``, ``--markers/--no-markers``).

    Options default to None, meaning "keep the value from the file or the dataclass".
    """

    def decorate(func: Callable) -> Callable:
        for f in reversed(fields(config_cls)):
            if f.name not in skip:
                func = _option(f, help_texts)(func)
        return func

    return decorate


def _option(f, help_texts: dict[str, str]) -> Callable:
    flag = f.name.replace("_", "-")
    kind = str(f.type)
    extra: dict[str, Any] = {}
    if kind == "bool":
        decls = [f"--{flag}/--no-{flag}"]
    else:
        decls = [f"--{flag}"]
        extra["type"] = {"int": int, "float": float, "str": str}[kind]
    return click.option(*decls, f.name, default=None, help=f"{help_texts.get(f.name, '')} [{f.name}]", **extra)


_process = {"standalone": False}


def standalone_process() -> None:
    """Called by the console entry point: this process runs mtop-edge's sessions and nothing else."""
    _process["standalone"] = True


def share_cpu_threads(device: str, threads: int | None) -> None:
    """In the console command's own process, one onnxruntime thread pool for all of a parser's sessions.

    Not in a host process (tests, notebooks calling the CLI in-process), where other libraries'
    sessions could not coexist with onnxruntime's global pool.
    """
    if device == "cpu" and _process["standalone"]:
        from mtop_edge.runtime import share_thread_pool

        share_thread_pool(threads)
