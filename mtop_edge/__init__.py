"""mtop-edge: a task-oriented semantic parser (MTOP, pointer format) made small and fast for the edge.

``import mtop_edge`` stays light: the runtime (onnxruntime) loads on first use of ``Parser``, and
torch/transformers/optimum are only ever imported by the train, export and bench commands.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"
__all__ = ["Parser", "__version__"]

if TYPE_CHECKING:
    from mtop_edge.runtime import Parser


def __getattr__(name: str) -> Any:
    if name == "Parser":
        from mtop_edge.runtime import Parser

        return Parser
    raise AttributeError(f"module 'mtop_edge' has no attribute {name!r}")
