"""The encoder-pointer decoder's attention exported as onnxruntime's fused ``MultiHeadAttention``.

Exported as written, each decoder attention is some 20 nodes a step: the head reshapes and
transposes, the cache concatenation, the scores, the softmax (benchmarks/README.md, "Tiers").
During the export `fused_attention` gives every decoder ``Attention`` a kernel that emits one
``com.microsoft.MultiHeadAttention`` node instead, the same numbers in one CPU kernel:

- self-attention: the step's query/key/value projections [B, 1, D] and the cache [B, heads, P, d_kv]
  in, the output and the cache with this step appended out (``past_key``/``present_key``);
- cross-attention: the query and the encoder's keys/values in the cached layout [B, heads, S, d_kv]
  (computed once per utterance by the encoder graph), the padding bias as ``attention_bias``.

The graph's interface (input and output names, shapes) is the one the unfused export has, so the
runtime runs either. In PyTorch the kernel computes what `TorchAttention` computes, which the
export's tracing run and the parity check read.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch

from mtop_edge.modeling.encoder_pointer import TorchAttention

OPERATOR = "com.microsoft::MultiHeadAttention"


def _missing(g):
    """An omitted optional input of an ONNX node (an empty name in the graph)."""
    node = g.op("prim::Constant")
    node.setType(torch._C.OptionalType.ofTensor())
    return node


def _typed(output, like):
    """``output`` given ``like``'s type and shape (the exporter cannot infer a contrib operator's)."""
    output.setType(like.type())
    return output


class _Cached(torch.autograd.Function):
    @staticmethod
    def forward(ctx, query, key, value, past_key, past_value, heads: int):
        mixed, (keys, values) = TorchAttention.cached(query, key, value, (past_key, past_value), None, heads, 0.0)
        return mixed, keys, values

    @staticmethod
    def symbolic(g, query, key, value, past_key, past_value, heads: int):
        none = _missing(g)
        # inputs: query, key, value, bias, key_padding_mask, attention_bias, past_key, past_value
        inputs = (query, key, value, none, none, none, past_key, past_value)
        outputs = g.op(OPERATOR, *inputs, num_heads_i=heads, outputs=3)
        _typed(outputs[0], query)
        for present in outputs[1:]:  # the cache one step longer: its past axis unknown here
            present.setType(past_key.type().with_sizes([None] * 4))
        return outputs


class _Memory(torch.autograd.Function):
    @staticmethod
    def forward(ctx, query, keys, values, bias, heads: int):
        return TorchAttention.memory(query, keys, values, bias, heads, 0.0)

    @staticmethod
    def symbolic(g, query, keys, values, bias, heads: int):
        none = _missing(g)
        return _typed(g.op(OPERATOR, query, keys, values, none, none, bias, num_heads_i=heads), query)


class FusedAttention:
    """`TorchAttention`'s two entry points, exported as one fused node each (inference only)."""

    @staticmethod
    def cached(query, key, value, past, bias, heads: int, dropout: float):
        if past is None or bias is not None:
            raise ValueError("the fused self-attention is for one step after a (possibly empty) cache")
        mixed, keys, values = _Cached.apply(query, key, value, past[0], past[1], heads)
        return mixed, (keys, values)

    @staticmethod
    def memory(query, keys, values, bias, heads: int, dropout: float) -> torch.Tensor:
        return _Memory.apply(query, keys, values, bias, heads)


@contextmanager
def fused_attention(model) -> Iterator[None]:
    """Within the block every decoder attention of ``model`` exports as `FusedAttention`."""
    attentions = [a for layer in model.layers for a in (layer.self_attention, layer.cross_attention)]
    for attention in attentions:
        attention.kernel = FusedAttention
    try:
        yield
    finally:
        for attention in attentions:
            del attention.kernel
