"""The pointer-head model: its scores, training, export parity and parsing through the one runtime."""

from __future__ import annotations

import json

import pytest

torch = pytest.importorskip("torch")

from mtop_edge.errors import MtopEdgeError  # noqa: E402
from tests.conftest import SAMPLES, TINY_RECIPE, small_bench  # noqa: E402


def _tiny_config(**extra):
    from transformers import MT5Config

    return MT5Config(
        vocab_size=20, d_model=16, d_ff=32, num_layers=1, num_decoder_layers=1, num_heads=2, d_kv=8,
        pad_token_id=0, eos_token_id=1, decoder_start_token_id=0, dropout_rate=0.0,
        pointer_head=True, pointer_start=12, num_pointers=8, **extra,
    )  # fmt: skip


def test_scores_are_query_times_marker_state_and_absent_words_are_masked():
    from mtop_edge.modeling.pointer_head import POINTER_MASK, PointerHeadT5

    torch.manual_seed(0)
    model = PointerHeadT5(_tiny_config()).eval()
    # markers @ptr0 (12) and @ptr1 (13) before two words: the utterance has 2 of the 8 pointers
    source = torch.tensor([[12, 5, 13, 6, 7, 1]])
    mask = torch.ones_like(source)
    hidden, memory, bias = model.encode(source, mask)
    assert torch.equal(memory[0, 0], hidden[0, 0]) and torch.equal(memory[0, 1], hidden[0, 2])
    assert bias[0, :2].tolist() == [0.0, 0.0] and bias[0, 2:].eq(-POINTER_MASK).all()

    decoder_ids = torch.tensor([[0, 3, 13]])  # start, a symbol, then pointer 1: fed back as word 1's marker state
    logits = model.step_logits(decoder_ids, hidden, mask, memory, bias)
    assert logits.shape == (1, 3, 20)
    states = model.decoder(
        inputs_embeds=torch.cat([model.shared(decoder_ids[:, :2]), memory[:, 1:2]], dim=1),
        encoder_hidden_states=hidden,
        encoder_attention_mask=mask,
    ).last_hidden_state
    query = states @ model.pointer_projection().t()
    expected = query @ memory.transpose(1, 2) + bias.unsqueeze(1)
    torch.testing.assert_close(logits[..., 12:20], expected)
    torch.testing.assert_close(logits[..., :12], model.lm_head(states)[..., :12])
    assert logits[0, :, 14:].max() < -POINTER_MASK / 2  # pointers past the last word cannot win


def test_greedy_never_points_past_the_utterance():
    from mtop_edge.modeling.pointer_head import PointerHeadT5

    torch.manual_seed(1)
    model = PointerHeadT5(_tiny_config()).eval()
    out = model.greedy(torch.tensor([[12, 5, 13, 6, 1]]), torch.ones(1, 5, dtype=torch.long), max_new_tokens=12)
    assert out[0, 0] == 0 and out.shape[1] <= 13
    assert all(i < 14 for i in out[0].tolist())  # only @ptr0 and @ptr1 exist in this utterance


def test_word_dropout_replaces_word_pieces_only():
    from mtop_edge.core.spec import PointerSpec, SourceFormat
    from mtop_edge.core.vocab import TargetVocab
    from mtop_edge.training.features import WordDropout

    vocab = TargetVocab(intents=("IN:A",), slots=(), max_pointers=3)
    spec = PointerSpec(vocab=vocab, symbol_ids=(10, 11, 12, 13, 14), source_format=SourceFormat.MARKERS)
    rows = [[12, 5, 6, 13, 7, 1, 0], [12, 8, 1, 0, 0, 0, 0]]

    def collate(batch):
        return {"input_ids": torch.tensor(batch)}

    assert WordDropout(collate, spec, 0.0, seed=0)(rows)["input_ids"].tolist() == rows
    dropped = WordDropout(collate, spec, 1.0, seed=0)(rows)["input_ids"].tolist()
    assert dropped == [[12, 2, 2, 13, 2, 1, 0], [12, 2, 1, 0, 0, 0, 0]]
    some = WordDropout(collate, spec, 0.5, seed=3)
    seen = {tuple(map(tuple, some(rows)["input_ids"].tolist())) for _ in range(20)}
    assert len(seen) > 1  # drawn afresh per batch


def test_training_writes_a_pointer_head_checkpoint(tiny_pointer_model):
    from mtop_edge.modeling.pointer_head import PointerHeadT5
    from mtop_edge.modeling.torch_engine import load_checkpoint

    out, summary = tiny_pointer_model
    config = json.loads((out / "config.json").read_text())
    assert config["pointer_head"] is True and config["num_pointers"] == 40
    assert isinstance(load_checkpoint(out), PointerHeadT5)
    assert summary["train_loss"] < 5.0  # it learned something from the sample (random is ~6)


@pytest.mark.parametrize("quantize", ["none", "int8"])
def test_export_parity_and_parse_offsets(tiny_pointer_model, tmp_path, quantize):
    from mtop_edge.export import export_model
    from mtop_edge.export.options import ExportOptions
    from mtop_edge.runtime import Parser

    checkpoint, _ = tiny_pointer_model
    out = tmp_path / quantize
    manifest = export_model(
        str(checkpoint), out, ExportOptions.load(None, quantize=quantize, parity_rows=60), log=lambda _: None
    )
    # export raises unless fp32 ONNX equals the PyTorch greedy output on every row
    assert manifest["parity"]["fp32_identical_to_torch"] == manifest["parity"]["rows"] == 60
    assert manifest["pointer_head"] == {
        "num_pointers": 40,
        "first_pointer": manifest["architecture"]["decoder_vocab"] - 40,
    }
    parser = Parser.load(out)
    utterances = ["set an alarm for 7am tomorrow", "call Camilla on whatsapp", "what's the weather in New York today"]
    for result in parser.parse_batch(utterances):
        assert result.ok  # constrained decoding: always a well-formed tree
        for slot in result.intent.slots:
            if slot.text is not None:
                assert result.utterance[slot.start : slot.end] == slot.text
    assert parser.parse("set an alarm for 7am tomorrow").logical_form.startswith("[IN:")


def test_pointer_head_refuses_what_it_cannot_do(tiny_pointer_model, tmp_path):
    from mtop_edge.export import export_model
    from mtop_edge.export.options import ExportOptions
    from mtop_edge.training.recipe import Pointing, Recipe
    from mtop_edge.training.train import train

    with pytest.raises(MtopEdgeError, match="span_loss tags the pointer head"):  # checked before any file is read
        train(Recipe(pointing=Pointing.MARKERS, span_loss=0.5), tmp_path / "absent.jsonl", tmp_path / "m")
    assert not (tmp_path / "m").exists()
    checkpoint, _ = tiny_pointer_model
    options_and_messages = (({"layout": "merged", "fuse": False}, "separate decoders"), ({"trim": False}, "trimmed"))
    for options, message in options_and_messages:
        with pytest.raises(MtopEdgeError, match=message):
            export_model(str(checkpoint), tmp_path / "x", ExportOptions.load(None, **options), log=lambda _: None)
        assert not (tmp_path / "x").exists()


def test_label_smoothing_gives_absent_words_no_share():
    from mtop_edge.modeling.pointer_head import POINTER_MASK, PointerHeadT5

    model = PointerHeadT5(_tiny_config(pointer_label_smoothing=0.1))
    logits = torch.zeros(1, 2, 20)
    logits[..., 14:] = -POINTER_MASK  # 6 absent words: 14 open columns
    labels = torch.tensor([[3, -100]])
    expected = 0.9 * torch.log(torch.tensor(14.0)) + 0.1 * torch.log(torch.tensor(14.0))
    torch.testing.assert_close(model.loss(logits, labels), expected)
    model.config.pointer_label_smoothing = 0.0
    torch.testing.assert_close(model.loss(logits, labels), torch.log(torch.tensor(14.0)))


def test_absent_pointer_bias_masks_pointers_past_the_rows_words():
    from mtop_edge.modeling.pointer_head import POINTER_MASK, absent_pointer_bias

    ids = torch.tensor([[12, 5, 13, 6, 1], [12, 7, 1, 0, 0]])  # markers 12, 13 = @ptr0, @ptr1 of 4 pointers
    assert (absent_pointer_bias(ids, 12, 4) / -POINTER_MASK).tolist() == [[0, 0, 1, 1], [0, 1, 1, 1]]


def test_span_tags_name_the_innermost_slot_over_each_word():
    from mtop_edge.modeling.pointer_head import PointerHeadT5
    from mtop_edge.modeling.pointing import word_tags

    torch.manual_seed(2)
    config = _tiny_config(span_loss=0.5, span_slot_ids=[3, 4], span_intent_ids=[2], span_close_id=5)
    model = PointerHeadT5(config)
    source = torch.tensor([[12, 6, 13, 7, 14, 8, 1]])  # three words
    mask = torch.ones_like(source)
    # [IN [SL:3 w0 ] [SL:4 [IN w1 ] ] ] EOS, padded: w2 is in no slot, words 3-7 are absent
    labels = torch.tensor([[2, 3, 12, 5, 4, 2, 13, 5, 5, 5, 1, -100]])
    _, _, bias = model.encode(source, mask)
    assert word_tags(labels, bias, model.config).tolist() == [[1, 2, 0, -100, -100, -100, -100, -100]]
    with_span = model(input_ids=source, attention_mask=mask, labels=labels).loss
    with_span.backward()
    assert model.pointer_span_tags.weight.grad.abs().sum() > 0
    plain = PointerHeadT5(_tiny_config())
    plain.load_state_dict(model.state_dict(), strict=False)
    assert with_span > plain(input_ids=source, attention_mask=mask, labels=labels).loss  # the auxiliary term adds


def test_span_loss_trains_and_exports_without_its_head(tmp_path):
    from mtop_edge.export import export_model
    from mtop_edge.export.options import ExportOptions
    from mtop_edge.runtime import Parser
    from mtop_edge.training.recipe import Recipe
    from mtop_edge.training.train import train

    quick = {"max_steps": 8, "eval_steps": 8, "d_model": 32, "d_ff": 64, "num_layers": 1, "num_decoder_layers": 1}
    with pytest.raises(MtopEdgeError, match='needs pointing = "head"'):
        train(Recipe.load(TINY_RECIPE, span_loss=0.5, **quick), SAMPLES / "train_sample.jsonl", tmp_path / "no")
    recipe = Recipe.load(TINY_RECIPE, pointing="head", span_loss=0.5, **quick)
    train(recipe, SAMPLES / "train_sample.jsonl", tmp_path / "model")
    assert json.loads((tmp_path / "model" / "config.json").read_text())["span_loss"] == 0.5
    options = ExportOptions.load(None, quantize="none", parity_rows=20)
    manifest = export_model(str(tmp_path / "model"), tmp_path / "onnx", options, log=lambda _: None)
    assert manifest["parity"]["fp32_identical_share"] == 1.0
    assert Parser.load(tmp_path / "onnx").parse("set an alarm for 7am").ok


def test_bench_runs_our_engines_on_a_pointer_head_checkpoint(tiny_pointer_model, tmp_path):
    from mtop_edge.bench import run_bench

    said: list[str] = []
    engines = ["mtop-edge-fp32", "torch-fp32", "ctranslate2-int8", "optimum-int8"]
    options = small_bench(tiny_pointer_model[0], tmp_path, engines=engines, rows=3, throughput_rows=3)
    rows = run_bench(options, log=said.append)["rows"]
    assert {r["engine"] for r in rows} == {"mtop-edge-fp32", "torch-fp32"}
    assert any("ctranslate2-int8, optimum-int8 left out" in line for line in said)
    ems = {r["engine"]: r["exact_match"] for r in rows}
    assert ems["mtop-edge-fp32"] is not None and ems["torch-fp32"] is not None


def test_training_goes_on_from_a_pointer_head_checkpoint(tiny_pointer_model, tmp_path):
    """A warm restart: init = our pointer-head checkpoint, a new schedule; it starts from its weights."""
    import torch

    from mtop_edge.modeling.torch_engine import load_checkpoint
    from mtop_edge.training.recipe import Recipe
    from mtop_edge.training.train import train

    checkpoint, first = tiny_pointer_model
    recipe = Recipe.load(TINY_RECIPE, pointing="head", init=str(checkpoint), max_steps=4, eval_steps=4)
    summary = train(recipe, SAMPLES / "train_sample.jsonl", tmp_path / "more")
    before, after = load_checkpoint(checkpoint), load_checkpoint(tmp_path / "more")
    assert before.config.num_pointers == after.config.num_pointers
    # four steps from the trained weights: close to them, and a mean loss under the first run's
    # (which started from random weights, ~6)
    change = (after.pointer_query.weight - before.pointer_query.weight).norm() / before.pointer_query.weight.norm()
    assert 0 < change.item() < 0.5
    assert summary["train_loss"] < first["train_loss"]
    with torch.no_grad():
        assert not torch.equal(after.shared.weight, before.shared.weight)
    with pytest.raises(MtopEdgeError, match="span head"):  # the tiny model was trained without the span loss
        train(
            Recipe.load(TINY_RECIPE, pointing="head", init=str(checkpoint), span_loss=0.5),
            SAMPLES / "train_sample.jsonl",
            tmp_path / "x",
        )
