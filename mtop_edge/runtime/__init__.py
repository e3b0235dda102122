"""The edge runtime: onnxruntime, numpy, sentencepiece and tokenizers only (never torch or transformers)."""

from mtop_edge.choices import Constraints, Device
from mtop_edge.runtime.parser import Parser, default_model_dir
from mtop_edge.runtime.results import IntentResult, ParseResult, SlotResult
from mtop_edge.runtime.sessions import ThreadPool, share_thread_pool

__all__ = [
    "Constraints",
    "Device",
    "IntentResult",
    "ParseResult",
    "Parser",
    "SlotResult",
    "ThreadPool",
    "default_model_dir",
    "share_thread_pool",
]
