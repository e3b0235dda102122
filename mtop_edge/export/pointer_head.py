"""Export of pointer-head models: optimum's T5 graphs plus a few nodes, the same logits layout.

optimum exports the T5 stack as it is. Two changes make its graphs compute what
``PointerHeadT5`` computes:

- the output layer gets d extra rows, the folded pointer projection, so ``logits`` ends with the
  query vector; the query's product with the pointer memory replaces those columns by one score
  per source word (the last ``num_pointers`` columns of the trimmed vocabulary, as before);
- the encoder also outputs ``pointer_memory`` (marker states) and ``pointer_bias`` (absent words),
  which both decoders take as inputs; a pointer fed back as the decoder input reads its marker state.

So the runtime decodes both kinds of model with one loop: it passes the encoder's extra outputs
to the decoders' inputs of the same name.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

from mtop_edge.errors import ModelError

LOGITS = "logits"
# the encoder outputs these and the decoders take them (fed by name: layout.feeding_output)
POINTER_MEMORY = "pointer_memory"
POINTER_BIAS = "pointer_bias"


def is_pointer_head(model) -> bool:
    return bool(getattr(model.config, "pointer_head", False))


def plain_model(model):
    """A plain MT5ForConditionalGeneration with the same T5 weights (what optimum knows how to export)."""
    from transformers import MT5ForConditionalGeneration

    plain = MT5ForConditionalGeneration(model.config)
    state = {k: v for k, v in model.state_dict().items() if not k.startswith("pointer_")}
    plain.load_state_dict(state, strict=False)
    plain.tie_weights()
    return plain.eval()


@contextmanager
def with_query_rows(plain, pointer_model, keep_decoder: Sequence[int] | None) -> Iterator[int]:
    """Inside ``trimmed``: replace the pointer rows of the output layer by the pointer projection.

    Yields the exported id of ``@ptr0`` (the first column the scores will fill).

    Raises:
        ModelError: the decoder is not trimmed, or the pointers are not its last rows.
    """
    import torch

    start, count = pointer_model.config.pointer_start, pointer_model.config.num_pointers
    if keep_decoder is None:
        raise ModelError("a pointer-head model exports with a trimmed decoder (trim = true)")
    if list(keep_decoder[-count:]) != list(range(start, start + count)):
        raise ModelError("pointer-head export: the pointer tokens are not the last rows of the trimmed decoder")
    first = len(keep_decoder) - count
    head = plain.lm_head
    projection = pointer_model.pointer_projection().detach()
    if pointer_model.config.tie_word_embeddings:  # trimmed() folded this scale into the vocabulary rows
        projection = projection * pointer_model.config.d_model**-0.5
    extended = torch.nn.Linear(head.in_features, first + projection.shape[0], bias=False)
    with torch.no_grad():
        extended.weight.copy_(torch.cat([head.weight[:first], projection]))
    plain.lm_head = extended
    try:
        yield first
    finally:
        plain.lm_head = head


def add_pointer_outputs(path: Path, marker_ids: Sequence[int]) -> None:
    """Encoder: ``pointer_memory`` [B, P, d] (state at each marker) and ``pointer_bias`` [B, P]."""
    import numpy as np
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    from mtop_edge.modeling.pointer_head import POINTER_MASK  # torch: only when exporting such a model

    model = onnx.load(str(path))
    graph = model.graph
    hidden = graph.output[0].name
    graph.initializer.extend(
        [
            numpy_helper.from_array(np.asarray(marker_ids, dtype=np.int64), "pointer/marker_ids"),
            numpy_helper.from_array(np.asarray([-1], dtype=np.int64), "pointer/last_axis"),
            numpy_helper.from_array(np.asarray([1], dtype=np.int64), "pointer/sequence_axis"),
            numpy_helper.from_array(np.asarray(1.0, dtype=np.float32), "pointer/one"),
            numpy_helper.from_array(np.asarray(POINTER_MASK, dtype=np.float32), "pointer/mask"),
        ]
    )
    graph.node.extend(
        [
            helper.make_node("Unsqueeze", ["input_ids", "pointer/last_axis"], ["pointer/ids"]),
            helper.make_node("Equal", ["pointer/ids", "pointer/marker_ids"], ["pointer/is_marker"]),
            helper.make_node("Cast", ["pointer/is_marker"], ["pointer/onehot"], to=TensorProto.FLOAT),
            helper.make_node("Transpose", ["pointer/onehot"], ["pointer/onehot_t"], perm=[0, 2, 1]),
            helper.make_node("MatMul", ["pointer/onehot_t", hidden], [POINTER_MEMORY]),
            helper.make_node("ReduceSum", ["pointer/onehot", "pointer/sequence_axis"], ["pointer/present"], keepdims=0),
            helper.make_node("Sub", ["pointer/present", "pointer/one"], ["pointer/absent"]),
            helper.make_node("Mul", ["pointer/absent", "pointer/mask"], [POINTER_BIAS]),
        ]
    )
    graph.output.extend(
        [
            helper.make_tensor_value_info(POINTER_MEMORY, TensorProto.FLOAT, ["batch_size", len(marker_ids), None]),
            helper.make_tensor_value_info(POINTER_BIAS, TensorProto.FLOAT, ["batch_size", len(marker_ids)]),
        ]
    )
    _save(model, path)


def add_pointer_scores(path: Path, first_pointer: int, count: int) -> None:
    """Decoder: pointer inputs, scores in place of the query columns, pointed states fed back."""
    import numpy as np
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    model = onnx.load(str(path))
    graph = model.graph
    tables = {t.name for t in graph.initializer if len(t.dims) == 2 and t.dims[0] == first_pointer + count}
    embedding = next((n for n in graph.node if n.op_type == "Gather" and n.input[0] in tables), None)
    if embedding is None:
        raise ModelError(f"{path.name}: no token embedding Gather to feed pointers back through")
    logits = next(o for o in graph.output if o.name == LOGITS)
    raw_logits, raw_embedding, embedded = "pointer/raw_logits", "pointer/token_embedding", embedding.output[0]
    for node in graph.node:  # rename the two tensors whose readers now get the pointer-aware versions
        node.output[:] = [{LOGITS: raw_logits, embedded: raw_embedding}.get(o, o) for o in node.output]
    graph.initializer.extend(
        [
            numpy_helper.from_array(np.asarray(first_pointer, dtype=np.int64), "pointer/first"),
            numpy_helper.from_array(np.asarray(0, dtype=np.int64), "pointer/zero"),
            numpy_helper.from_array(np.asarray(count, dtype=np.int64), "pointer/count"),
            numpy_helper.from_array(np.asarray([0.0, 1.0], dtype=np.float32), "pointer/onehot_values"),
            numpy_helper.from_array(np.asarray([0], dtype=np.int64), "pointer/starts"),
            numpy_helper.from_array(np.asarray([first_pointer], dtype=np.int64), "pointer/split"),
            numpy_helper.from_array(np.asarray([np.iinfo(np.int64).max], dtype=np.int64), "pointer/end"),
            numpy_helper.from_array(np.asarray([-1], dtype=np.int64), "pointer/last_axis"),
            numpy_helper.from_array(np.asarray([1], dtype=np.int64), "pointer/step_axis"),
        ]
    )
    feed_back = [
        # a pointer id reads its word's marker state instead of a token embedding
        helper.make_node("GreaterOrEqual", ["input_ids", "pointer/first"], ["pointer/is_pointer"]),
        helper.make_node("Sub", ["input_ids", "pointer/first"], ["pointer/offset"]),
        helper.make_node("Max", ["pointer/offset", "pointer/zero"], ["pointer/index"]),
        helper.make_node(
            "OneHot", ["pointer/index", "pointer/count", "pointer/onehot_values"], ["pointer/pick"], axis=-1
        ),
        helper.make_node("MatMul", ["pointer/pick", POINTER_MEMORY], ["pointer/fed"]),
        helper.make_node("Unsqueeze", ["pointer/is_pointer", "pointer/last_axis"], ["pointer/is_pointer_3d"]),
        helper.make_node("Where", ["pointer/is_pointer_3d", "pointer/fed", raw_embedding], [embedded]),
    ]
    position = list(graph.node).index(embedding) + 1  # nodes stay in topological order
    for offset, node in enumerate(feed_back):
        graph.node.insert(position + offset, node)
    graph.node.extend(
        [
            # scores: the query columns times the memory, absent words masked
            helper.make_node(
                "Slice", [raw_logits, "pointer/starts", "pointer/split", "pointer/last_axis"], ["pointer/vocabulary"]
            ),
            helper.make_node(
                "Slice", [raw_logits, "pointer/split", "pointer/end", "pointer/last_axis"], ["pointer/query"]
            ),
            helper.make_node("Transpose", [POINTER_MEMORY], ["pointer/memory_t"], perm=[0, 2, 1]),
            helper.make_node("MatMul", ["pointer/query", "pointer/memory_t"], ["pointer/raw_scores"]),
            helper.make_node("Unsqueeze", [POINTER_BIAS, "pointer/step_axis"], ["pointer/bias"]),
            helper.make_node("Add", ["pointer/raw_scores", "pointer/bias"], ["pointer/scores"]),
            helper.make_node("Concat", ["pointer/vocabulary", "pointer/scores"], [LOGITS], axis=-1),
        ]
    )
    graph.input.extend(
        [
            helper.make_tensor_value_info(POINTER_MEMORY, TensorProto.FLOAT, ["batch_size", count, None]),
            helper.make_tensor_value_info(POINTER_BIAS, TensorProto.FLOAT, ["batch_size", count]),
        ]
    )
    shape = [d.dim_param or d.dim_value for d in logits.type.tensor_type.shape.dim]
    graph.output.remove(logits)
    graph.output.insert(
        0, helper.make_tensor_value_info(LOGITS, TensorProto.FLOAT, [*shape[:-1], first_pointer + count])
    )
    _save(model, path)


def _save(model, path: Path) -> None:
    import onnx

    onnx.checker.check_model(model)
    onnx.save(model, str(path))
