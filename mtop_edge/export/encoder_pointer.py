"""Export of encoder-pointer models: our own two graphs, in the encoder-cross-kv layout.

- ``encoder_model.onnx``: the BERT encoder plus everything a decoder step reads from it, computed
  once per utterance: every layer's cross-attention keys/values (``present.N.encoder.*``), the
  words' pointer keys and fed-back states, and the absent-word bias;
- ``decoder_with_past_model.onnx``: one decoder step with the self-attention cache, run for every
  step (the first with an empty past); ``logits`` in the target layout (labels, then word scores).

The names are the ones every kind uses (``layout.py``), so the runtime's one loop runs these graphs
as it runs the T5 kinds'. With the ``fuse`` option the encoder gets onnxruntime's BERT fusions
(attention, skip layer norms, GELU, the embedding layer norm), and the decoder step exports each
attention as one fused node (``decoder_attention.py``) with the parallel projections packed into one
MatMul (``fusion.pack_parallel_matmuls``).
"""

from __future__ import annotations

import contextlib
from pathlib import Path

from mtop_edge.errors import ModelError
from mtop_edge.export.fusion import pack_parallel_matmuls
from mtop_edge.export.graphs import quiet
from mtop_edge.export.t5 import Graphs
from mtop_edge.layout import (
    CROSS,
    DECODER_WITH_PAST,
    ENCODER,
    ENCODER_ATTENTION_MASK,
    INPUT_IDS,
    LOGITS,
    PAST,
    PRESENT,
    SELF,
)

POINTER_OUTPUTS = ("pointer_keys", "pointer_feed", "pointer_bias")
OPSET = 17
PARITY_NEEDS_FRESH_MODEL = False  # our exporter leaves the model as it found it (see `_export`)
MICROSOFT = "com.microsoft"  # the domain of onnxruntime's fused operators
FUSED_OPS = ("Attention", "SkipLayerNormalization", "EmbedLayerNormalization", "BiasGelu", "Gelu", "FastGelu")


def _names(layers: int) -> dict[str, list[str]]:
    """Per-layer key/value names, layer by layer (key, value), for pasts and presents of both attentions."""

    def names(prefix: str, part: str) -> list[str]:
        return [f"{prefix}.{i}.{part}.{kind}" for i in range(layers) for kind in ("key", "value")]

    return {
        "self_past": names(PAST, SELF),
        "cross_past": names(PAST, CROSS),
        "self_present": names(PRESENT, SELF),
        "cross_present": names(PRESENT, CROSS),
    }


def _dummy(config):
    import torch

    rows, tokens, words = 2, 7, config.num_pointers
    input_ids = torch.randint(1, config.bert.vocab_size, (rows, tokens))
    attention_mask = torch.ones(rows, tokens, dtype=torch.long)
    attention_mask[1, 5:] = 0
    word_index = torch.full((rows, words), -1, dtype=torch.long)
    word_index[:, :3] = torch.tensor([1, 2, 4])
    return input_ids, attention_mask, word_index


def _export(module, args, path: Path, inputs: list[str], outputs: list[str], axes: dict, opset: int) -> None:
    """torch.onnx.export (the TorchScript exporter) of ``module`` in eval mode."""
    import torch

    # the exporter restores the module's own training flag afterwards, down to every submodule:
    # a wrapper left in training mode would switch the whole model's dropout on
    module.eval()
    with torch.no_grad(), quiet():
        torch.onnx.export(
            module,
            args,
            str(path),
            input_names=inputs,
            output_names=outputs,
            dynamic_axes=axes,
            opset_version=opset,
            dynamo=False,
        )


def export_encoder(model, out: Path, *, opset: int = OPSET, fuse: bool = True) -> dict[str, int]:
    """``encoder_model.onnx``: the BERT encoder, fused on its own (onnxruntime's shape inference, which
    the fusions need, does not follow the gathers after it), joined to the head that computes what
    the decoder reads. Returns the fused node counts (empty without ``fuse``)."""
    import onnx
    import torch
    from onnx import compose

    config = model.config
    names = _names(config.num_decoder_layers)
    input_ids, attention_mask, word_index = _dummy(config)
    states = "last_hidden_state"

    class Bert(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.bert = model.encoder

        def forward(self, input_ids, attention_mask):
            return self.bert(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state

    class Head(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.model = model

        def forward(self, last_hidden_state, word_index):
            encoded = self.model.encoded(last_hidden_state, word_index)
            cross = [t for pair in encoded.cross for t in pair]
            return (*cross, encoded.pointer_keys, encoded.pointer_feed, encoded.pointer_bias)

    batch, sequence = "batch_size", "encoder_sequence_length"
    bert_path, head_path = out / "bert.onnx", out / "head.onnx"
    token_axes = {0: batch, 1: sequence}
    bert_axes = {INPUT_IDS: token_axes, "attention_mask": token_axes, states: token_axes}
    _export(Bert(), (input_ids, attention_mask), bert_path, [INPUT_IDS, "attention_mask"], [states], bert_axes, opset)
    fused = fuse_encoder(bert_path, config.bert) if fuse else {}
    with torch.no_grad():
        hidden = Bert()(input_ids, attention_mask)
    head_outputs = [*names["cross_present"], *POINTER_OUTPUTS]
    head_axes = {
        states: token_axes,
        "word_index": {0: batch},
        **{n: {0: batch, 2: sequence} for n in names["cross_present"]},
        **{n: {0: batch} for n in POINTER_OUTPUTS},
    }
    _export(Head(), (hidden, word_index), head_path, [states, "word_index"], head_outputs, head_axes, opset)
    bert, head = onnx.load(str(bert_path)), onnx.load(str(head_path))
    head = compose.add_prefix(head, "head/", rename_inputs=False, rename_outputs=False)
    head.opset_import.extend(o for o in bert.opset_import if o.domain == MICROSOFT)  # the fused ops' domain
    joined = compose.merge_models(bert, head, io_map=[(states, states)], outputs=[o.name for o in head.graph.output])
    unique = {o.domain: o.version for o in joined.opset_import}  # merge_models lists each domain once per model
    del joined.opset_import[:]
    joined.opset_import.extend(onnx.helper.make_opsetid(domain, version) for domain, version in unique.items())
    onnx.checker.check_model(joined)
    onnx.save(joined, str(out / ENCODER))
    bert_path.unlink()
    head_path.unlink()
    return fused


def export_decoder(model, out: Path, *, opset: int = OPSET, fuse: bool = True) -> dict[str, int]:
    """``decoder_with_past_model.onnx``: one step with the self-attention cache; with ``fuse`` each
    attention is one fused node (`decoder_attention.fused_attention`). Returns the fused node counts."""
    import onnx
    import torch

    from mtop_edge.export.decoder_attention import fused_attention
    from mtop_edge.modeling.encoder_pointer import Encoded, memory_bias

    config = model.config
    layers, heads, d_kv = config.num_decoder_layers, config.num_heads, config.d_kv
    names = _names(layers)

    class Step(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.model = model

        def forward(self, input_ids, encoder_attention_mask, pointer_keys, pointer_feed, pointer_bias, *past):
            self_past, cross = past[: 2 * layers], past[2 * layers :]
            encoded = Encoded(
                cross=[(cross[2 * i], cross[2 * i + 1]) for i in range(layers)],
                memory_bias=memory_bias(encoder_attention_mask, pointer_keys.dtype),
                pointer_keys=pointer_keys,
                pointer_feed=pointer_feed,
                pointer_bias=pointer_bias,
                words=pointer_keys,  # read by the span loss only, never when decoding
            )
            pairs = [(self_past[2 * i], self_past[2 * i + 1]) for i in range(layers)]
            logits, presents = self.model.decode(input_ids, encoded, pairs)
            return (logits, *[t for pair in presents for t in pair])

    input_ids, attention_mask, word_index = _dummy(config)
    with torch.no_grad():
        encoded = model.encode(input_ids, attention_mask, word_index)
    cross = [t for pair in encoded.cross for t in pair]
    pointer = (encoded.pointer_keys, encoded.pointer_feed, encoded.pointer_bias)
    self_past = [torch.randn(input_ids.shape[0], heads, 3, d_kv) for _ in range(2 * layers)]
    step_ids = torch.tensor([[3], [config.pointer_start + 1]])
    batch, sequence, past = "batch_size", "encoder_sequence_length", "past_sequence_length"
    path = out / DECODER_WITH_PAST
    with fused_attention(model) if fuse else contextlib.nullcontext():
        _export(
            Step(),
            (step_ids, attention_mask, *pointer, *self_past, *cross),
            path,
            [INPUT_IDS, ENCODER_ATTENTION_MASK, *POINTER_OUTPUTS, *names["self_past"], *names["cross_past"]],
            [LOGITS, *names["self_present"]],
            {
                INPUT_IDS: {0: batch},
                ENCODER_ATTENTION_MASK: {0: batch, 1: sequence},
                **{n: {0: batch} for n in POINTER_OUTPUTS},
                **{n: {0: batch, 2: past} for n in names["self_past"]},
                **{n: {0: batch, 2: sequence} for n in names["cross_past"]},
                LOGITS: {0: batch},
                **{n: {0: batch, 2: "past_sequence_length + 1"} for n in names["self_present"]},
            },
            opset,
        )
    if not fuse:
        return {}
    graph = onnx.load(str(path))
    packed = pack_parallel_matmuls(graph)  # each self-attention's q/k/v, and the two heads
    onnx.save(graph, str(path))
    attention = sum(n.op_type == "MultiHeadAttention" for n in graph.graph.node)
    return {"MultiHeadAttention": attention, "MatMuls packed": packed}


def fuse_encoder(path: Path, bert) -> dict[str, int]:
    """onnxruntime's BERT fusions on a BertModel graph, in place; returns the fused node counts.

    Raises:
        ModelError: no attention was fused (the graph does not have the pattern the optimizer knows).
    """
    import onnx
    from onnxruntime.transformers.optimizer import optimize_model

    with quiet():
        optimized = optimize_model(
            str(path),
            model_type="bert",
            num_heads=bert.num_attention_heads,
            hidden_size=bert.hidden_size,
            opt_level=0,  # the fusions only: onnxruntime's own graph optimizations run at load
        )
    counts = {op: sum(n.op_type == op for n in optimized.model.graph.node) for op in FUSED_OPS}
    if not counts["Attention"]:
        raise ModelError(f"{path.name}: onnxruntime's BERT fusion found no attention to fuse")
    model = optimized.model
    if not any(o.domain == MICROSOFT for o in model.opset_import):  # the optimizer leaves it out
        model.opset_import.append(onnx.helper.make_opsetid(MICROSOFT, 1))
    onnx.save(model, str(path))
    return {op: n for op, n in counts.items() if n}


def int8_ops(file: str, embeddings: bool) -> tuple[str, ...]:
    """What dynamic int8 quantizes in each graph: the weight MatMuls, the fused BERT attention
    (QAttention: BERT has no attention bias to lose), and with ``embeddings`` the embedding tables
    (the fused embedding layer norm's word table is most of the encoder's bytes)."""
    if file == ENCODER:
        return ("MatMul", "Attention", *(("EmbedLayerNormalization", "Gather") if embeddings else ()))
    return ("MatMul", *(("Gather",) if embeddings else ()))


def load_model(path: Path):
    """The checkpoint with eager attention in its encoder (the pattern onnxruntime's BERT fusion knows)."""
    from mtop_edge.modeling.encoder_pointer import EncoderPointerModel

    return EncoderPointerModel.from_pretrained(str(path), encoder_attention="eager").eval()


def write_graphs(model, spec, options, out: Path, *, keep_decoder=None, keep_encoder=None, log) -> Graphs:
    """Export ``model`` into ``out``: the fused encoder and the step decoder (its target vocabulary is
    its own small one: nothing to trim, ``keep_*`` are the T5 kinds')."""
    config, bert = model.config, model.config.bert
    shape = f"encoder {bert.num_hidden_layers} layers, d {bert.hidden_size}; decoder vocabulary {config.vocab_size}"
    log(f"exporting ONNX ({shape})")
    opset = options.opset or OPSET
    fused = export_encoder(model, out, opset=opset, fuse=options.fuse)
    fused_step = export_decoder(model, out, opset=opset, fuse=options.fuse)
    fusion = {name: counts for name, counts in ((ENCODER, fused), (DECODER_WITH_PAST, fused_step)) if counts}
    entries = {"fusion": fusion} if fusion else {}
    arch = {
        "d_model": config.d_model,
        "num_layers": bert.num_hidden_layers,
        "num_decoder_layers": config.num_decoder_layers,
        "num_heads": config.num_heads,
        "d_kv": config.d_kv,
        "encoder_vocab": bert.vocab_size,
        "decoder_vocab": config.vocab_size,
    }
    return Graphs([ENCODER, DECODER_WITH_PAST], entries, arch)
