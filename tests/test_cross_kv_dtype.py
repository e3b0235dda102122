"""Cross-attention keys/values handed from the encoder to the decoder steps in float16 (cross_kv_dtype)."""

from __future__ import annotations

import pytest

from mtop_edge.errors import ModelError
from mtop_edge.layout import DECODER_WITH_PAST, ENCODER, UNGROUPED_STEP
from mtop_edge.runtime import Parser

from .conftest import export_tiny
from .test_export import UTTERANCES


def _types(path, which: str) -> dict[str, int]:
    import onnx

    graph = onnx.load(str(path), load_external_data=False).graph
    return {v.name: v.type.tensor_type.elem_type for v in getattr(graph, which)}


def test_int8_exports_hand_over_float16_keys_and_values(tiny_model, tiny_export, tmp_path):
    from onnx import TensorProto

    out, manifest = tiny_export  # the default profile
    layers = manifest["architecture"]["num_decoder_layers"]
    assert manifest["options"]["cross_kv_dtype"] == "float16" and len(manifest["cross_kv_float16"]) == 2 * layers
    returned = _types(out / ENCODER, "output")
    read = _types(out / UNGROUPED_STEP, "input")
    for name in manifest["cross_kv_float16"]:
        assert returned[name] == TensorProto.FLOAT16
        assert read[name.replace("present", "past_key_values")] == TensorProto.FLOAT16
    grouped = {n: t for n, t in _types(out / DECODER_WITH_PAST, "input").items() if ".encoder." in n}  # row groups
    assert len(grouped) == 4 * len(manifest["cross_kv_float16"]) and set(grouped.values()) == {TensorProto.FLOAT16}
    assert returned["last_hidden_state"] == TensorProto.FLOAT  # only the handed-over tensors change
    assert all(t == TensorProto.FLOAT for n, t in read.items() if ".decoder." in n)  # the self-attention cache too

    as_computed = export_tiny(tiny_model, tmp_path / "float32", cross_kv_dtype="float32")
    assert "cross_kv_float16" not in as_computed
    assert _types(tmp_path / "float32" / ENCODER, "output")[manifest["cross_kv_float16"][0]] == TensorProto.FLOAT
    # the same keys/values to float16 precision, and a decoder step's logits within that of the float32 hand-over
    import numpy as np
    import onnxruntime as ort

    def sessions(directory):  # the encoder and the step without row groups, which takes the whole batch's grid
        return [
            ort.InferenceSession(str(directory / f), providers=["CPUExecutionProvider"])
            for f in (ENCODER, UNGROUPED_STEP)
        ]

    parser = Parser.load(out)
    sources = [parser.source.prepare(u).ids for u in UTTERANCES[:8]]
    width = max(map(len, sources))
    ids = np.array([s + [0] * (width - len(s)) for s in sources], dtype=np.int64)
    mask = (ids != 0).astype(np.int64)
    logits, encodings = [], []
    for encoder, step in (sessions(out), sessions(tmp_path / "float32")):
        names = [o.name for o in encoder.get_outputs()]
        encoded = dict(zip(names, encoder.run(None, {"input_ids": ids, "attention_mask": mask}), strict=True))
        feed = {"input_ids": np.zeros((len(ids), 1), np.int64), "encoder_attention_mask": mask}
        for graph_input in step.get_inputs():
            if graph_input.name.startswith("past_key_values") and ".encoder." in graph_input.name:
                feed[graph_input.name] = encoded[graph_input.name.replace("past_key_values", "present")]
            elif graph_input.name.startswith("past_key_values"):
                feed[graph_input.name] = np.zeros((len(ids), graph_input.shape[1], 0, graph_input.shape[3]), np.float32)
        logits.append(
            step.run(["logits"], {k: v for k, v in feed.items() if k in {i.name for i in step.get_inputs()}})[0]
        )
        encodings.append(encoded)
    halves = {n: v for n, v in encodings[0].items() if v.dtype == np.float16}  # the float16 export's
    assert halves
    for name, half in halves.items():
        assert half.dtype == np.float16 and np.isfinite(half).all(), name
    scale = float(np.abs(logits[1]).max())
    np.testing.assert_allclose(logits[0], logits[1], atol=0.02 * scale, rtol=0)
    assert (logits[0].argmax(-1) == logits[1].argmax(-1)).mean() >= 0.75
    assert manifest["parity"]["quantized_identical_share"] >= as_computed["parity"]["quantized_identical_share"] - 0.1
    parser = Parser.load(out)
    parser.decoder.encoder.group_tokens = 12  # the encoder in groups: float16 pieces put back together
    assert [r.ok for r in parser.parse_batch(UTTERANCES[:20])] == [
        r.ok for r in Parser.load(out).parse_batch(UTTERANCES[:20])
    ]


def test_float16_keys_and_values_only_where_they_apply(tmp_path):
    from mtop_edge.export.cross_kv import store_cross_kv_fp16
    from mtop_edge.export.options import CrossKvDtype, ExportOptions

    for options, context in (
        ({"quantize": "none"}, {}),
        ({"layout": "separate"}, {}),
        ({}, {"encoder_pointer": True}),
    ):
        resolved, notes = ExportOptions.load(None, **options).resolve(**context)
        assert resolved.cross_kv_dtype is CrossKvDtype.FLOAT32, options
        assert any("cross keys/values stay float32" in note for note in notes), options
    assert ExportOptions().resolve()[0].cross_kv_dtype is CrossKvDtype.FLOAT16

    import onnx
    from onnx import TensorProto, helper

    x = helper.make_tensor_value_info("input_ids", TensorProto.INT64, [1, 2])
    y = helper.make_tensor_value_info("last_hidden_state", TensorProto.INT64, [1, 2])
    graph = helper.make_graph([helper.make_node("Identity", ["input_ids"], ["last_hidden_state"])], "g", [x], [y])
    onnx.save(helper.make_model(graph), str(tmp_path / ENCODER))
    with pytest.raises(ModelError, match="no cross keys/values"):
        store_cross_kv_fp16(tmp_path, [DECODER_WITH_PAST])
