"""The edge runtime: onnxruntime, numpy and sentencepiece only (never torch or transformers)."""

from mtop_edge.runtime.parser import Parser, default_model_dir
from mtop_edge.runtime.results import IntentResult, ParseResult, SlotResult
from mtop_edge.runtime.sessions import share_thread_pool

__all__ = ["IntentResult", "ParseResult", "Parser", "SlotResult", "default_model_dir", "share_thread_pool"]
