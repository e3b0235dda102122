"""The runtime is the checkpoint's parser: parity with PyTorch, batching, grouping, dropping rows, model files."""

from __future__ import annotations

import itertools
import json
import shutil
from pathlib import Path

import hypothesis
import numpy as np
import onnxruntime as ort
import pytest
from hypothesis import strategies as st

from mtop_edge.errors import InputError, ModelError
from mtop_edge.runtime import Parser

from .conftest import SAMPLES, distinct_words, export_tiny
from .conftest import parse_command as run

ROOT = Path(__file__).resolve().parents[1]
EVAL_ROWS = [json.loads(line) for line in (SAMPLES / "eval_sample.jsonl").read_text().splitlines()]


# -- the runtime is the checkpoint's parser ------------------------------------------------------


def test_unconstrained_runtime_equals_pytorch_greedy_token_for_token(tiny_model, tiny_export_fp32):
    from mtop_edge.modeling.torch_engine import TorchParser

    torch_parser = TorchParser(tiny_model[0])
    parser = Parser.load(tiny_export_fp32[0], constraints="none")
    utterances = [row["utterance"] for row in EVAL_ROWS[:64]]
    sources, counts = [], []
    for utterance in utterances:
        source = parser.source.prepare(utterance)
        sources.append(source.ids)
        counts.append(len(source.words))
    expected = torch_parser.generate_ids(sources, target_only=True)
    expected = [ids[1:-1] if ids[-1] == parser.spec.eos_id else ids[1:] for ids in expected]
    for batch_size in (1, 7, 64):  # padding and per-row stopping must not change anything
        got = []
        for i in range(0, len(sources), batch_size):
            decoded = parser.decode_ids(sources[i : i + batch_size], counts[i : i + batch_size], batch_size=64)
            got.extend(parser.original_ids(ids) for ids in decoded.ids)
        assert got == expected
    # more rows than max_batch: sorted by length, decoded in slices, returned in the input order
    assert max(map(len, sources)) > min(map(len, sources)) and parser.max_batch < len(sources)
    assert [parser.original_ids(ids) for ids in parser.decode_ids(sources, counts).ids] == expected
    assert [parser.original_ids(ids) for ids in parser.decode_ids(sources, counts, batch_size=5).ids] == expected


def leaf_slots(slots):
    for slot in slots:
        if "intent" in slot:
            yield from leaf_slots(slot["intent"]["slots"])
        else:
            yield slot


def test_results_carry_exact_offsets(tiny_export):
    parser = Parser.load(tiny_export[0])
    for result in parser.parse_batch([row["utterance"] for row in EVAL_ROWS[:50]]):
        record = result.to_json()
        assert set(record) >= {"utterance", "logical_form", "intent", "slots"}
        assert record["intent"] == result.tree.label
        for slot in leaf_slots(record["slots"]):
            assert result.utterance[slot["start"] : slot["end"]] == slot["text"]


def test_wrong_argument_types_are_a_clear_type_error(tiny_export):
    parser = Parser.load(tiny_export[0])
    with pytest.raises(TypeError, match="use parse_batch"):
        parser.parse(["set an alarm"])
    with pytest.raises(TypeError, match="sequence of str"):
        parser.parse_batch("set an alarm")  # would otherwise parse each character
    with pytest.raises(TypeError, match="sequence of str"):
        parser.parse_batch(["set an alarm", None])


def _edit_manifest(directory, change) -> None:
    path = directory / "manifest.json"
    manifest = json.loads(path.read_text())
    change(manifest)
    path.write_text(json.dumps(manifest))


def _short_decoder_ids(manifest: dict) -> None:
    manifest["decoder_ids"] = manifest["decoder_ids"][:-3]


def _pad_not_kept(manifest: dict) -> None:  # the decoder start/PAD id replaced by an unrelated id
    manifest["decoder_ids"][0] = 10**6


def _wider_decoder_vocab(manifest: dict) -> None:
    manifest["architecture"]["decoder_vocab"] += 5


def _more_layers(manifest: dict) -> None:
    manifest["architecture"]["num_decoder_layers"] += 1


@pytest.mark.parametrize(
    ("damage", "message"),
    [
        (lambda d: (d / "manifest.json").unlink(), "manifest.json: missing"),
        (lambda d: (d / "manifest.json").write_text("{nope"), "manifest.json: corrupt manifest"),
        (lambda d: (d / "encoder_model.onnx").unlink(), "encoder_model.onnx: missing model file"),
        (
            lambda d: (d / "decoder_with_past_model.onnx").write_bytes(b"\x00garbage"),
            "decoder_with_past_model.onnx: cannot load ONNX graph",
        ),
        (
            lambda d: _edit_manifest(d, lambda m: m.update(decoder_layout="separate")),
            "decoder_model.onnx: missing model file",
        ),
        (lambda d: (d / "spiece.model").write_bytes(b"junk"), "spiece.model: corrupt sentencepiece model"),
        (lambda d: (d / "weights.bin").unlink(), "weights.bin: missing model file"),
        (lambda d: _edit_manifest(d, lambda m: m.pop("decoder_ids")), "trimmed export's decoder_ids are missing"),
        (lambda d: _edit_manifest(d, _short_decoder_ids), "decoder_ids has"),
        (lambda d: _edit_manifest(d, lambda m: m.update(decoder_ids="abc")), "decoder_ids must be a list"),
        (lambda d: _edit_manifest(d, _pad_not_kept), "decoder_ids lacks ids the decoder must produce"),
        (lambda d: _edit_manifest(d, _wider_decoder_vocab), "decoder_ids has"),
        (lambda d: _edit_manifest(d, _more_layers), "does not match the manifest"),
        (lambda d: (d / "manifest.json").write_text("[1, 2]"), "a JSON object expected, found list"),
        (
            lambda d: shutil.copyfile(d / "encoder_model.onnx", d / "decoder_with_past_model.onnx"),
            "decoder_with_past_model.onnx: does not match the manifest",
        ),
    ],
)
def test_missing_or_corrupt_model_files_are_named(tiny_export, tmp_path, damage, message):
    model = tmp_path / "model"
    shutil.copytree(tiny_export[0], model)
    damage(model)
    result = run("--model", str(model), "call mom")
    assert result.exit_code == 1
    assert message in result.output and "Traceback" not in result.output
    with pytest.raises(ModelError, match=message.split(":")[0]):
        Parser.load(model)


def test_missing_default_model_says_what_to_do(monkeypatch, tmp_path):
    from mtop_edge import manifest as manifest_module

    monkeypatch.setattr(manifest_module, "DEFAULT_MODEL_DIR", tmp_path / "default")
    result = run("set an alarm")
    assert result.exit_code == 1 and "no default model is embedded" in result.output and "--model" in result.output


def test_embedded_models_load_by_name_and_unknown_names_list_them():
    from mtop_edge.manifest import DEFAULT_MODEL_DIR, embedded_models

    names = embedded_models()
    assert "edge-pointer" in names and names[0] == DEFAULT_MODEL_DIR.name
    assert Parser.load("edge-pointer").manifest.model_id.startswith("edge-pointer@")
    result = run("--model", "no-such-model", "set an alarm")
    assert result.exit_code == 1 and "embedded models: " + ", ".join(names) in result.output


def test_truncation_keeps_the_first_words(tiny_export):
    source = Parser.load(tiny_export[0]).source
    limit = source.spec.vocab.max_pointers
    words = distinct_words(limit + 7)
    prepared = source.prepare(" ".join(words), truncate=True)
    assert prepared.truncated and [w.text for w in prepared.words] == words[:limit]


def test_truncation_also_fits_the_token_limit(tiny_export):
    source = Parser.load(tiny_export[0]).source
    max_tokens = source.spec.max_source_tokens
    # twelve very long words: few enough for the pointers, far too many pieces for the encoder
    long_words = ["".join(chr(97 + (i * 7 + k * 3) % 26) for k in range(max_tokens // 4)) for i in range(12)]
    utterance = " ".join(long_words)
    with pytest.raises(InputError, match="--truncate"):
        source.prepare(utterance)
    prepared = source.prepare(utterance, truncate=True)
    assert prepared.truncated and len(prepared.ids) <= max_tokens
    assert [w.text for w in prepared.words] == long_words[: len(prepared.words)] and prepared.words
    result = run("--model", str(tiny_export[0]), "--truncate", "--json", utterance)
    assert result.exit_code == 0 and json.loads(result.output)["truncated"] is True


def test_in_process_callers_keep_per_session_pools(tiny_export):
    # the CLI invoked in-process and the bench's engine class must not turn on onnxruntime's global
    # pool: it would then refuse every other library's session in the host process
    from mtop_edge.bench.engines import MtopEdgeEngine

    assert run("--model", str(tiny_export[0]), "--threads", "2", "call mom").exit_code == 0
    MtopEdgeEngine(tiny_export[0], threads=2, device="cpu", constrained=True)
    session = ort.InferenceSession(str(tiny_export[0] / "encoder_model.onnx"), providers=["CPUExecutionProvider"])
    assert session.get_inputs()[0].name == "input_ids"


def test_default_slice_size_follows_the_device_and_the_model_width(tiny_export):
    from types import SimpleNamespace

    from mtop_edge.runtime.parser import (
        GROUPED_WIDE_MODEL_BATCH,
        MAX_BATCH,
        PACKED_ENCODER_TOKENS,
        WIDE_MODEL_BATCH,
        WIDE_MODEL_ENCODER_TOKENS,
        default_encoder_tokens,
        default_max_batch,
    )

    def manifest(d_model, packed=False, groups=1):
        return SimpleNamespace(architecture=SimpleNamespace(d_model=d_model), packed_encoder=packed, row_groups=groups)

    assert default_max_batch(manifest(192), "cpu") == MAX_BATCH["cpu"] == 12
    assert default_max_batch(manifest(512), "cpu") == WIDE_MODEL_BATCH == 32
    # a step in row groups does not pay for a slice's padding in its cross-attention: larger slices
    assert default_max_batch(manifest(512, groups=4), "cpu") == GROUPED_WIDE_MODEL_BATCH == 128
    assert default_max_batch(manifest(192, groups=4), "cpu") == 12
    assert default_max_batch(manifest(512), "cuda") == MAX_BATCH["cuda"]
    assert default_encoder_tokens(manifest(512), "cpu") == WIDE_MODEL_ENCODER_TOKENS == 64
    assert default_encoder_tokens(manifest(192), "cpu") is None
    assert default_encoder_tokens(manifest(512), "cuda") is None
    # an encoder that skips padding itself (pack_encoder_tokens) pays for it in attention only
    assert default_encoder_tokens(manifest(512, packed=True), "cpu") == PACKED_ENCODER_TOKENS == 256
    assert default_encoder_tokens(manifest(192, packed=True), "cpu") is None
    assert Parser.load(tiny_export[0]).max_batch == 12 and Parser.load(tiny_export[0], max_batch=5).max_batch == 5


@pytest.mark.parametrize("export", ["tiny_export_fp32", "tiny_pointer_export_fp32", "first-step decoder"])
def test_encoding_a_batch_in_groups_changes_no_output(export, request, tmp_path):
    """The encoder in length-sorted groups, outputs zero-padded back to the batch's width, gives the
    decoder exactly what one encoder call on the whole padded batch gives (fp32: token for token):
    the cross-attention keys/values from the encoder, the pointer head's memory, and the hidden
    states a first-step decoder reads (exports without encoder_cross_kv)."""
    if export == "first-step decoder":
        model_dir = tmp_path / "first-step"
        export_tiny(request.getfixturevalue("tiny_model"), model_dir, quantize="none", layout="separate")
    else:
        model_dir = request.getfixturevalue(export)[0]
    parser = Parser.load(model_dir, constraints="none")
    sources, counts = [], []
    for row in EVAL_ROWS[:48]:
        source = parser.source.prepare(row["utterance"])
        sources.append(source.ids)
        counts.append(len(source.words))
    assert len(set(map(len, sources))) > 5  # rows of many lengths: groups pad differently from the batch
    whole = parser.decode_ids(sources, counts, batch_size=48).ids
    calls = []
    run = parser.decoder.encoder._run
    parser.decoder.encoder._run = lambda feed: calls.append(feed["input_ids"].shape) or run(feed)
    for budget in (1, 40, 160):  # one row per call, a few rows, many rows
        calls.clear()
        parser.decoder.encoder.group_tokens = budget
        assert parser.decode_ids(sources, counts, batch_size=48).ids == whole
        assert sum(rows for rows, _ in calls) == 48 and len(calls) > 1  # every row, in more than one call
        assert budget == 1 or all(rows * width <= budget or rows == 1 for rows, width in calls)


@pytest.mark.parametrize(
    "export", ["tiny_export_fp32", "tiny_pointer_export_fp32", "first-step decoder", "merged decoder"]
)
@pytest.mark.parametrize("constrain", [True, False])
def test_dropping_done_rows_from_the_batch_changes_no_output(export, constrain, request, tmp_path, monkeypatch):
    """Rows that are done leave the batch mid-decode (CPU): every per-row input is gathered down to
    the rows still decoded, and the outputs stay those of the full batch (fp32: token for token)."""
    from mtop_edge.runtime import decoder as decoder_module

    if export in ("first-step decoder", "merged decoder"):
        model_dir = tmp_path / "other"
        merged = export == "merged decoder"
        export_tiny(
            request.getfixturevalue("tiny_model"),
            model_dir,
            quantize="none",
            layout="merged" if merged else "separate",
            fuse=not merged,
            parity_rows=0,
        )
    else:
        model_dir = request.getfixturevalue(export)[0]
    parser = Parser.load(model_dir, constraints="pairs" if constrain else "none")
    assert parser.decoder.drop_done  # the CPU default
    sources, counts = [], []
    for row in EVAL_ROWS[:40]:
        source = parser.source.prepare(row["utterance"])
        sources.append(source.ids)
        counts.append(len(source.words))
    drops = []
    real_drop = parser.decoder._drop_done
    # args: step binding, keep (a mask over the rows decoded so far), ...
    monkeypatch.setattr(parser.decoder, "_drop_done", lambda *args: drops.append(args[1]) or real_drop(*args))
    for at in (0.0, 0.5):  # 0: a row leaves as soon as it is done
        monkeypatch.setattr(decoder_module, "DROP_AT", at)
        dropped = parser.decode_ids(sources, counts, batch_size=40)
        assert drops and all(0 < keep.sum() < len(keep) for keep in drops), "no row left the batch"
        drops.clear()
        parser.decoder.drop_done = False
        kept = parser.decode_ids(sources, counts, batch_size=40)
        parser.decoder.drop_done = True
        assert not drops
        assert dropped.ids == kept.ids and dropped.ended == kept.ended


@hypothesis.given(st.lists(st.integers(1, 40), min_size=1, max_size=40), st.integers(1, 200))
def test_token_groups_cover_every_row_once_in_length_order_within_budget(lengths, budget):
    from mtop_edge.runtime.encoding import token_groups

    lengths = np.asarray(lengths)
    groups = token_groups(lengths, budget)
    rows = np.concatenate(groups)
    assert sorted(rows.tolist()) == list(range(len(lengths)))  # every row once
    assert (np.diff(lengths[rows]) >= 0).all()  # in length order
    for group in groups:  # within the budget, unless a row alone is over it
        assert len(group) == 1 or len(group) * lengths[group].max() <= budget
    for left, right in itertools.pairwise(groups):  # a group is cut only where the next row would not fit
        assert (len(left) + 1) * lengths[right[0]] > budget
