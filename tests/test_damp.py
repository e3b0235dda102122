"""Checkpoints trained elsewhere, in the DAMP pointer format: spec derivation, export parity,
parse results equal to transformers generate + DAMP decoding, and clear errors."""

from __future__ import annotations

import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from mtop_edge.errors import ModelError
from mtop_edge.formats import checkpoint_spec
from mtop_edge.formats.damp import pointer_target, split_words


def test_split_words_cuts_where_damp_respaced_and_keeps_offsets():
    assert [w.text for w in split_words("Set an alarm for 7pm, ok?")] == [
        "Set",
        "an",
        "alarm",
        "for",
        "7",
        "pm",
        ",",
        "ok",
        "?",
    ]
    words = [w.text for w in split_words("call Larry's cell at 7:30am")]
    assert words == ["call", "Larry", "'s", "cell", "at", "7", ":", "30", "am"]


@given(st.text(alphabet=st.sampled_from(list("ab7: '.,?!s\u2019pm")), max_size=30))
def test_split_words_are_substrings_at_their_offsets(utterance):
    for word in split_words(utterance):
        assert word.text and utterance[word.start : word.end] == word.text and not word.text.isspace()


def test_pointer_target_follows_damp():
    source, target = pointer_target("wake me at 7pm please", "[IN:CREATE_ALARM [SL:DATE_TIME at 7 pm ] ]")
    assert source == "wake me at 7 pm please"
    assert target == "[IN:CREATE_ALARM [SL:DATE_TIME <pt-2> <pt-3> <pt-4> ] ]"


@pytest.fixture(scope="module")
def damp_checkpoint(tmp_path_factory, train_sample):
    pytest.importorskip("torch")
    from tests.damp_checkpoint import build

    out = tmp_path_factory.mktemp("damp") / "checkpoint"
    build(out, train_sample[:32])
    return out


@pytest.fixture(scope="module")
def damp_export(damp_checkpoint, tmp_path_factory):
    from mtop_edge.export import export_model
    from mtop_edge.export.options import ExportOptions

    out = tmp_path_factory.mktemp("damp-export") / "fp32"
    options = ExportOptions.load(None, quantize="none", parity_rows=60)
    return out, export_model(str(damp_checkpoint), out, options, log=lambda _: None)


def test_spec_is_derived_from_the_tokenizer(damp_checkpoint):
    from transformers import AutoTokenizer

    spec = checkpoint_spec(damp_checkpoint)
    tokenizer = AutoTokenizer.from_pretrained(damp_checkpoint)
    assert spec.words == "damp" and spec.tokenizer == "tokenizer.json" and not spec.markers
    assert tokenizer.convert_ids_to_tokens(spec.separator_id) == "\u2581"
    assert tokenizer.convert_ids_to_tokens(spec.pointer_ids[0]) == "<pt-0>"
    # the ids a DAMP target tokenizes to are exactly the spec's symbols plus separators
    _, target = pointer_target("set an alarm for 7pm", "[IN:CREATE_ALARM [SL:DATE_TIME for 7 pm ] ]")
    ids = tokenizer(text_target=target).input_ids
    symbol_of = dict(zip(spec.symbol_ids, spec.symbols, strict=True))
    assert [symbol_of[i] for i in ids if i not in (spec.separator_id, spec.eos_id)] == [
        "[IN:CREATE_ALARM", "[SL:DATE_TIME", "@ptr3", "@ptr4", "@ptr5", "]", "]"
    ]  # fmt: skip


def test_export_parity_and_parse_equal_transformers_generate(damp_checkpoint, damp_export, train_sample):
    import torch
    from transformers import AutoTokenizer, MT5ForConditionalGeneration

    from mtop_edge.core.forms import same_parse
    from mtop_edge.core.pointer import from_pointer_tokens
    from mtop_edge.runtime import Parser

    out, manifest = damp_export
    assert manifest["parity"]["fp32_identical_to_torch"] == manifest["parity"]["rows"] == 60
    assert manifest["pointer"]["separator_id"] is not None and (out / "tokenizer.json").is_file()

    # transformers generate on the re-spaced utterance, decoded the DAMP way: <pt-N> -> word N
    tokenizer = AutoTokenizer.from_pretrained(damp_checkpoint)
    model = MT5ForConditionalGeneration.from_pretrained(damp_checkpoint).eval()
    utterances = [e.utterance for e in train_sample[:32]]  # what the tiny model learnt: well-formed outputs
    words = [split_words(u) for u in utterances]
    inputs = tokenizer([" ".join(w.text for w in ws) for ws in words], padding=True, return_tensors="pt")
    parser = Parser.load(out, constraints="none")
    with torch.no_grad():
        generated = model.generate(**inputs, max_new_tokens=parser.max_steps, num_beams=1, do_sample=False)
    texts = tokenizer.batch_decode(generated, skip_special_tokens=True)
    # every row, well-formed or not: the runtime's output reads back as the same string
    sources = [parser.source.prepare(u).ids for u in utterances]
    decoded = parser.decode_ids(sources, [len(ws) for ws in words])
    runtime_texts = [tokenizer.decode(parser.original_ids(ids), skip_special_tokens=True) for ids in decoded.ids]
    assert runtime_texts == texts
    compared = 0
    for utterance, ws, text, result in zip(utterances, words, texts, parser.parse_batch(utterances), strict=True):
        tokens = [t.replace("<pt-", "@ptr").rstrip(">") if t.startswith("<pt-") else t for t in text.split()]
        try:
            expected = from_pointer_tokens(tokens, utterance, ws)
        except Exception:  # a malformed generate output: the runtime must not find a tree either
            assert result.tree is None
            continue
        compared += 1
        assert same_parse(result.tree, expected), (utterance, text, result.logical_form)
        for slot in result.intent.slots:
            if slot.text is not None:
                assert utterance[slot.start : slot.end] == slot.text
    assert compared >= 3  # some rows are well-formed trees (the tiny model is weak): trees compared too


def test_constrained_parse_is_always_well_formed(damp_export, eval_sample):
    from mtop_edge.runtime import Parser

    results = Parser.load(damp_export[0]).parse_batch([e.utterance for e in eval_sample[:60]])
    assert all(r.ok for r in results)


def test_a_checkpoint_in_neither_format_is_refused_in_one_line(tmp_path):
    from click.testing import CliRunner

    from mtop_edge.cli import cli

    (tmp_path / "config.json").write_text(json.dumps({"model_type": "mt5"}))
    (tmp_path / "model.safetensors").write_bytes(b"not weights")
    with pytest.raises(ModelError, match="neither an mtop-edge checkpoint"):
        checkpoint_spec(tmp_path)
    result = CliRunner().invoke(cli, ["export", "--model", str(tmp_path), "--out", str(tmp_path / "x")])
    assert result.exit_code != 0 and "neither an mtop-edge checkpoint" in result.output
    assert "Traceback" not in result.output and not (tmp_path / "x").exists()


def test_string_exact_match_scores_damp_targets(damp_checkpoint, train_sample):
    from mtop_edge.core.forms import serialize
    from mtop_edge.formats.damp import load_tokenizer, string_exact_match

    spec = checkpoint_spec(damp_checkpoint)
    tokenizer = load_tokenizer(damp_checkpoint / "tokenizer.json")
    rows = train_sample[:8]
    golds = [tokenizer.encode(pointer_target(e.utterance, serialize(e.tree))[1]).ids for e in rows]
    seen = []

    def oracle(sources, n_words):  # answers the gold target for each source, in order
        seen.extend(sources)
        return golds[len(seen) - len(sources) : len(seen)]

    assert string_exact_match(oracle, spec, tokenizer, rows, gold_spacing=True, batch_size=3) == 1.0
    # the sources are the gold-spaced utterances, tokenized as DAMP did (EOS included)
    assert seen[0] == tokenizer.encode(pointer_target(rows[0].utterance, serialize(rows[0].tree))[0]).ids
    wrong = [golds[1]] * len(rows)
    score = string_exact_match(lambda s, n: wrong[: len(s)], spec, tokenizer, rows, gold_spacing=False)
    assert score == sum(g == golds[1] for g in golds) / len(rows)


def test_evaluate_reports_damp_string_exact_match(damp_checkpoint, damp_export):
    from click.testing import CliRunner

    from mtop_edge.cli import cli
    from tests.conftest import SAMPLES

    data = str(SAMPLES / "eval_sample.jsonl")
    for engine, model in (("onnx", damp_export[0]), ("torch", damp_checkpoint)):
        args = ["evaluate", "--engine", engine, "--model", str(model), "--data", data, "--limit", "20", "--json"]
        result = CliRunner().invoke(cli, args)
        assert result.exit_code == 0, result.output
        report = json.loads(result.output.strip().splitlines()[-1])
        assert report["n"] == 20 and 0.0 <= report["damp_string_em_gold_spacing"] <= 1.0
        assert 0.0 <= report["damp_string_em"] <= 1.0
