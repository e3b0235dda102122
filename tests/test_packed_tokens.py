"""The encoder without padding in its token-wise layers (export option pack_encoder_tokens)."""

from __future__ import annotations

import numpy as np
import pytest

from mtop_edge.errors import ModelError
from mtop_edge.layout import ENCODER
from mtop_edge.runtime import Parser

from .conftest import export_tiny
from .test_export import UTTERANCES, unconstrained_ids


@pytest.fixture(scope="module")
def packed_fp32(tiny_model, tiny_export_fp32):
    """The default fp32 export: its encoder packs its tokens."""
    assert tiny_export_fp32[1]["options"]["pack_encoder_tokens"]
    return tiny_export_fp32


@pytest.fixture(scope="module")
def padded_fp32(tiny_model, tmp_path_factory):
    out = tmp_path_factory.mktemp("padded") / "fp32"
    return out, export_tiny(tiny_model, out, quantize="none", pack_encoder_tokens=False)


def _padded_batch(lengths, vocab: int, seed: int = 0):
    rng = np.random.default_rng(seed)
    width = max(lengths)
    ids = rng.integers(3, vocab, (len(lengths), width)).astype(np.int64)
    mask = (np.arange(width)[None, :] < np.asarray(lengths)[:, None]).astype(np.int64)
    return np.where(mask == 1, ids, 0), mask


def test_packed_encoder_gives_each_real_token_the_numbers_it_had(packed_fp32, padded_fp32):
    import onnx
    import onnxruntime as ort

    packed, manifest = packed_fp32
    assert manifest["parity"]["fp32_identical_share"] == 1.0  # against PyTorch, inside the export
    assert manifest["fusion"][ENCODER]["tokens packed around attentions"] == manifest["architecture"]["num_layers"]
    ops = [n.op_type for n in onnx.load(str(packed / ENCODER), load_external_data=False).graph.node]
    assert ops.count("Compress") == 1 + manifest["architecture"]["num_layers"]  # the embedding, each attention output
    sessions = [
        ort.InferenceSession(str(d / ENCODER), providers=["CPUExecutionProvider"]) for d in (padded_fp32[0], packed)
    ]
    names = [o.name for o in sessions[0].get_outputs()]
    assert names == [o.name for o in sessions[1].get_outputs()]  # the same interface
    lengths = [5, 1, 9, 3, 9, 2]
    ids, mask = _padded_batch(lengths, manifest["architecture"]["encoder_vocab"])
    batch = sessions[1].run(None, {"input_ids": ids, "attention_mask": mask})
    for row, length in enumerate(lengths):  # each row alone, unpadded, through the unpacked encoder
        alone = sessions[0].run(
            None, {"input_ids": ids[row : row + 1, :length], "attention_mask": mask[row : row + 1, :length]}
        )
        for name, single, packed_out in zip(names, alone, batch, strict=True):
            axis = 1 if name == "last_hidden_state" else 2
            real = np.take(packed_out[row : row + 1], np.arange(length), axis=axis)
            np.testing.assert_allclose(real, single, rtol=1e-5, atol=1e-5, err_msg=f"{name}, row {row}")


def test_packed_export_decodes_as_the_padded_one_in_groups_or_whole(packed_fp32, padded_fp32):
    expected = unconstrained_ids(padded_fp32[0], UTTERANCES)
    assert unconstrained_ids(packed_fp32[0], UTTERANCES) == expected
    parser = Parser.load(packed_fp32[0], constraints="none")
    parser.decoder.encoder.group_tokens = 12  # several encoder calls per slice, each packed
    grouped = parser.decode_sources([parser.source.prepare(u) for u in UTTERANCES]).ids
    assert [parser.original_ids(ids) for ids in grouped] == expected


def test_packed_int8_export_quantizes_the_weights_only(tiny_model, tiny_export, tmp_path):
    import onnx

    padded = export_tiny(tiny_model, tmp_path / "padded-int8", pack_encoder_tokens=False)
    manifest = tiny_export[1]
    graph = onnx.load(str(tiny_export[0] / ENCODER), load_external_data=False).graph
    float_inputs = {n.name: n for n in graph.node if n.name.startswith("PackedTokens")}
    produced = {o: n.op_type for n in graph.node for o in n.output}
    # the unpacking Gathers read float activations, never a dequantized copy
    gathers = [n for n in float_inputs.values() if n.op_type == "Gather"]
    assert gathers and all(produced.get(n.input[0]) == "Flatten" for n in gathers)
    assert manifest["parity"]["quantized_identical_share"] >= padded["parity"]["quantized_identical_share"] - 0.1
    assert Parser.load(tiny_export[0]).parse("set an alarm for 7am").ok


def test_pack_encoder_tokens_needs_the_fused_t5_encoder():
    from onnx import TensorProto, helper

    from mtop_edge.export.options import ExportOptions
    from mtop_edge.export.packed_tokens import pack_encoder_tokens

    for options, context in (({"fuse": False}, {}), ({"quantize": "fp16"}, {}), ({}, {"encoder_pointer": True})):
        resolved, notes = ExportOptions.load(None, **options).resolve(**context)
        assert not resolved.pack_encoder_tokens and any("pack_encoder_tokens" in note for note in notes), options
    assert ExportOptions().resolve()[0].pack_encoder_tokens
    x = helper.make_tensor_value_info("attention_mask", TensorProto.INT64, [1, 2])
    y = helper.make_tensor_value_info("last_hidden_state", TensorProto.INT64, [1, 2])
    graph = helper.make_graph([helper.make_node("Identity", ["attention_mask"], ["last_hidden_state"])], "g", [x], [y])
    model = helper.make_model(graph)
    with pytest.raises(ModelError, match="not a fused T5 encoder"):
        pack_encoder_tokens(model)
    assert len(model.graph.node) == 1  # left as it was
