"""The library's exceptions, each with the exit code it means (``exit_code``). The CLI
(``mtop_edge.cli._Group``) turns any of them into a one-line message and that exit code."""

from __future__ import annotations

from pathlib import Path


class MtopEdgeError(Exception):
    """Base class: a user-facing error whose message is the whole story (no traceback needed)."""

    exit_code = 1


class FormError(MtopEdgeError, ValueError):
    """A logical form that is not a well-formed decoupled TOP tree."""

    def __init__(self, message: str, position: int, unit: str = "character") -> None:
        super().__init__(f"at {unit} {position}: {message}")
        self.position = position
        self.reason = message


class DataError(MtopEdgeError):
    """A data file that cannot be read, or a malformed row under ``strict``."""

    def __init__(self, message: str, path: str | Path | None = None, line: int | None = None) -> None:
        where = f"{path}:{line}: " if path is not None and line is not None else f"{path}: " if path else ""
        super().__init__(where + message)
        self.path = None if path is None else str(path)
        self.line = line
        self.reason = message


class InputError(MtopEdgeError, ValueError):
    """An utterance the parser cannot take: empty, or longer than the model can point to."""

    exit_code = 2


class ModelError(MtopEdgeError):
    """A model directory or checkpoint that is missing, incomplete or corrupt (names the file)."""


class DeviceError(MtopEdgeError):
    """A device was asked for and cannot be used (e.g. CUDA without onnxruntime-gpu)."""


class MissingExtraError(MtopEdgeError):
    """A command needs an optional dependency group that is not installed."""

    def __init__(self, extra: str, missing: str) -> None:
        super().__init__(
            f"this command needs the '{extra}' extra ({missing} is not installed): pip install 'mtop-edge[{extra}]'"
        )


def require(module: str, extra: str) -> None:
    """Import ``module`` or raise MissingExtraError naming the extra that provides it."""
    import importlib

    try:
        importlib.import_module(module)
    except ImportError as exc:
        raise MissingExtraError(extra, module) from exc
