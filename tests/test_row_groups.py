"""Decoder steps that attend to the encoder in row groups of similar length (cross_attention_groups)."""

from __future__ import annotations

import dataclasses
import itertools

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mtop_edge.errors import ModelError
from mtop_edge.layout import DECODER_WITH_PAST, UNGROUPED_STEP, group_name, grouped_input
from mtop_edge.runtime import Parser
from mtop_edge.runtime.row_groups import RowGroups, cut

from .conftest import export_tiny


def _padded(lengths, bounds) -> int:
    return sum((end - start) * (int(lengths[end - 1]) if end > start else 0) for start, end in bounds)


@settings(max_examples=200, deadline=None)
@given(st.lists(st.integers(1, 40), max_size=9), st.integers(1, 4))
def test_cut_covers_the_rows_in_runs_with_the_fewest_padded_tokens(lengths, groups):
    lengths = np.sort(np.array(lengths, dtype=np.int64))
    bounds = cut(lengths, groups)
    assert len(bounds) == groups
    assert [start for start, _ in bounds] == [0, *(end for _, end in bounds[:-1])] and bounds[-1][1] == len(lengths)
    n = len(lengths)
    best = min(
        _padded(lengths, list(zip([0, *cuts], [*cuts, n], strict=True)))
        for cuts in itertools.combinations_with_replacement(range(n + 1), groups - 1)
    )
    assert _padded(lengths, bounds) == best


def test_row_groups_slice_the_inputs_and_follow_rows_that_leave():
    lengths = np.array([2, 2, 3, 7, 7, 9])
    groups = RowGroups(lengths, 3)
    assert groups.bounds == [(0, 3), (3, 5), (5, 6)] and groups.widths == [3, 7, 9]  # 9 + 14 + 9 padded tokens
    key = np.arange(6 * 2 * 9 * 4, dtype=np.float32).reshape(6, 2, 9, 4)
    mask = (np.arange(9)[None, :] < lengths[:, None]).astype(np.int64)
    key = key * mask[:, None, :, None]  # an encoder output: zero past each row's length
    # the encoder's outputs arrive in pieces (token groups) that straddle the row groups
    arrays = groups.zeros(key, axis=2)
    assert [a.shape for a in arrays] == [(3, 2, 3, 4), (2, 2, 7, 4), (1, 2, 9, 4)]
    for rows, width in ((np.arange(0, 4), 7), (np.arange(4, 6), 9)):
        groups.place(arrays, key[rows, :, :width], rows, axis=2)
    for array, (start, end), width in zip(arrays, groups.bounds, groups.widths, strict=True):
        np.testing.assert_array_equal(array, key[start:end, :, :width])
    masks = groups.mask(mask)
    np.testing.assert_array_equal(masks["encoder_attention_mask.group0"], mask[:3, :3])
    assert masks["encoder_attention_mask.group2"].shape == (1, 9)
    kept = groups.leave(np.array([True, False, False, True, False, True]))
    assert [k.tolist() for k in kept] == [[True, False, False], [True, False], [True]]
    assert groups.bounds == [(0, 1), (1, 2), (2, 3)]
    assert grouped_input("encoder_attention_mask.group2") == ("encoder_attention_mask", 2)
    assert grouped_input("past_key_values.0.encoder.key") is None


@pytest.mark.parametrize("export", ["tiny_export_fp32", "tiny_pointer_export_fp32"])
def test_a_grouped_step_decodes_each_row_as_the_step_without_groups(export, request, eval_sample):
    """fp32, constrained, rows leaving the batch: the same ids and (to float error) log-probabilities.
    The pointer-head model's step also reads per-row pointer inputs, which follow the sorted rows whole."""
    import onnx

    out, manifest = request.getfixturevalue(export)
    assert manifest["cross_attention_groups"] == 4
    assert {"file": UNGROUPED_STEP, "max_rows": 16} in manifest["small_batch_steps"]
    inputs = [i.name for i in onnx.load(str(out / DECODER_WITH_PAST), load_external_data=False).graph.input]
    assert "encoder_attention_mask" not in inputs and group_name("encoder_attention_mask", 3) in inputs
    assert manifest["parity"]["fp32_identical_share"] == 1.0

    grouped = Parser.load(out)
    one_grid = Parser.load(out)
    plan = one_grid.decoder.plan
    one_grid.decoder.plan = dataclasses.replace(plan, twins=((10_000, plan.twins[-1][1]),))  # never grouped
    assert grouped.decoder.plan.calls(40)[1].file == DECODER_WITH_PAST
    assert one_grid.decoder.plan.calls(40)[1].file == UNGROUPED_STEP

    left = []
    leave = RowGroups.leave

    def counted(self, keep):
        left.append(int((~keep).sum()))
        return leave(self, keep)

    RowGroups.leave = counted
    try:
        sources = [grouped.source.prepare(e.utterance) for e in eval_sample[:40]]
        lengths = {len(s.ids) for s in sources}
        assert len(lengths) > 4  # mixed lengths: the groups differ in width
        a, b = (p.decode_sources(sources, batch_size=40) for p in (grouped, one_grid))  # one slice of 40 rows
    finally:
        RowGroups.leave = leave
    assert left and sum(left) > 0  # rows left the grouped batch while it decoded
    assert a.ids == b.ids and a.ended == b.ended
    for x, y in zip(a.logprobs, b.logprobs, strict=True):
        np.testing.assert_allclose(x, y, atol=1e-4)
    pieces = Parser.load(out)
    pieces.decoder.encoder.group_tokens = 30  # the encoder in token groups that straddle the row groups
    c = pieces.decode_sources(sources, batch_size=40)
    assert c.ids == b.ids
    for x, y in zip(c.logprobs, b.logprobs, strict=True):
        np.testing.assert_allclose(x, y, atol=1e-4)
    # a call with fewer rows than groups (empty groups), run through the grouped step
    few = Parser.load(out)
    few.decoder.plan = dataclasses.replace(plan, twins=())
    assert few.decode_sources(sources[:2]).ids == b.ids[:2] == one_grid.decode_sources(sources[:2]).ids


def test_row_groups_only_where_they_apply(tiny_model, tmp_path):
    from mtop_edge.errors import MtopEdgeError
    from mtop_edge.export.options import ExportOptions

    for options, context, why in (
        ({"layout": "separate"}, {}, "layout = separate"),
        ({"fuse": False}, {}, "unfused graphs"),
        ({"quantize": "fp16"}, {}, "fp16"),
        ({}, {"encoder_pointer": True}, "encoder-pointer"),
    ):
        resolved, notes = ExportOptions.load(None, **options).resolve(**context)
        assert resolved.cross_attention_groups == 1, options
        assert any(why in note and "cross_attention_groups = 1" in note for note in notes), options
    with pytest.raises(MtopEdgeError, match="cross_attention_groups must be 1 or more"):
        ExportOptions.load(None, cross_attention_groups=0).resolve()
    # without shared weights no twin (it would copy them): every call runs the grouped step
    logged = []
    from mtop_edge.export import export_model

    manifest = export_model(
        str(tiny_model[0]),
        tmp_path / "unshared",
        ExportOptions.load(None, share_weights=False, parity_rows=0),
        log=logged.append,
    )
    assert "small_batch_steps" not in manifest and manifest["cross_attention_groups"] == 4
    assert any("no step without row groups" in line for line in logged)
    assert Parser.load(tmp_path / "unshared").parse("set an alarm for 7am").ok
    one = export_tiny(tiny_model, tmp_path / "one", cross_attention_groups=1, parity_rows=0)
    assert "cross_attention_groups" not in one and "small_batch_steps" not in one


def test_the_rewrite_refuses_a_mask_read_by_anything_but_cross_attention(tiny_export):
    import onnx
    from onnx import helper

    from mtop_edge.export.row_groups import group_cross_attention

    model = onnx.load(str(tiny_export[0] / UNGROUPED_STEP), load_external_data=False)
    model.graph.node.append(helper.make_node("Identity", ["encoder_attention_mask"], ["mask_copy"]))
    before = model.SerializeToString()
    with pytest.raises(ModelError, match="encoder_attention_mask is read by Identity"):
        group_cross_attention(model, 4)
    assert model.SerializeToString() == before  # nothing changed
    with pytest.raises(ModelError, match="need no rewrite"):
        group_cross_attention(model, 1)


def test_a_device_that_does_not_cut_groups_runs_the_step_without_them(tiny_export, tmp_path):
    """CUDA: the groups are cut on the host, so every call the narrower twins do not take runs the one-grid step."""
    import onnxruntime as ort

    from mtop_edge.layout import SMALL_BATCH_STEP, DecoderCall, GraphPlan
    from mtop_edge.manifest import Manifest
    from mtop_edge.runtime.decoder import GreedyDecoder
    from mtop_edge.runtime.row_groups import one_grid_plan

    step, one_grid, int4 = DecoderCall(DECODER_WITH_PAST), DecoderCall(UNGROUPED_STEP), DecoderCall(SMALL_BATCH_STEP)
    plan = one_grid_plan(GraphPlan(step, step, ((4, int4), (16, one_grid))), tmp_path)
    assert plan == GraphPlan(one_grid, one_grid, ((4, int4),))
    assert plan.calls(4)[1] == int4 and plan.calls(500) == (one_grid, one_grid)
    with pytest.raises(ModelError, match="no step without them"):
        one_grid_plan(GraphPlan(step, step), tmp_path)

    class HostSessions:  # a non-CPU device whose sessions are CPU ones: enough to build the decoder
        device = "cuda"

        def create(self, path):
            loaded.append(path.name)
            return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])

    loaded: list[str] = []
    decoder = GreedyDecoder(Manifest.load(tiny_export[0]), HostSessions())
    assert decoder.plan.step.file == UNGROUPED_STEP and DECODER_WITH_PAST not in loaded
