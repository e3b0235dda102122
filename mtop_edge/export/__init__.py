"""`mtop-edge export`: checkpoint -> trimmed, quantized ONNX model directory (heavy dependencies, lazy).

``pipeline.py`` is the template every export runs; ``t5.py`` and ``encoder_pointer.py`` write each
model kind's graphs; the rest are the steps they share.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__all__ = ["checkpoint_hash", "export_model", "resolve_checkpoint"]

if TYPE_CHECKING:
    from mtop_edge.export.checkpoint import checkpoint_hash, resolve_checkpoint
    from mtop_edge.export.pipeline import export_model


def __getattr__(name: str) -> Any:  # the CLI imports export.options for --help: the rest waits for an export
    if name == "export_model":
        from mtop_edge.export.pipeline import export_model

        return export_model
    if name in ("checkpoint_hash", "resolve_checkpoint"):
        from mtop_edge.export import checkpoint

        return getattr(checkpoint, name)
    raise AttributeError(f"module 'mtop_edge.export' has no attribute {name!r}")
