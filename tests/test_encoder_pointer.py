"""The encoder-pointer kind (a pretrained BERT-family encoder with a pointer decoder): training,
word pieces, export parity with PyTorch, int8, and parsing through the one runtime loop."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

torch = pytest.importorskip("torch")

from mtop_edge.cli import cli  # noqa: E402
from mtop_edge.config import ConfigError  # noqa: E402
from mtop_edge.core.forms import same_parse  # noqa: E402
from mtop_edge.core.pointer import split_words  # noqa: E402
from mtop_edge.core.spec import SourceFormat  # noqa: E402
from mtop_edge.runtime import Parser  # noqa: E402

from .conftest import ENCODER_POINTER_RECIPE, SAMPLES  # noqa: E402

# int8 keeps the tiny model's constrained exact match within this many points of fp32 on the sample
INT8_EXACT_MATCH_BOUND = 0.05


def test_tiny_encoder_pointer_trains_and_writes_a_checkpoint_of_its_kind(tiny_encoder_pointer_model):
    out, summary = tiny_encoder_pointer_model
    losses = [
        json.loads(line)["loss"] for line in (out / "train_log.jsonl").read_text().splitlines() if '"loss"' in line
    ]
    assert len(losses) >= 4 and losses[-1] < 0.5 * losses[0]
    assert summary["kind"] == "encoder-pointer" and summary["global_step"] == 240
    config = json.loads((out / "config.json").read_text())
    assert config["model_type"] == "mtop-encoder-pointer" and config["encoder_config"]["hidden_size"] == 32
    spec = json.loads((out / "pointer.json").read_text())
    assert spec["source_format"] == SourceFormat.WORD_PIECES.value and spec["tokenizer"] == "tokenizer.json"
    assert (out / "tokenizer.json").is_file() and (out / "recipe.toml").is_file()


def test_every_word_keeps_a_position_even_when_its_pieces_are_unknown(tiny_bert):
    from mtop_edge.formats.tokenizer_json import load_tokenizer
    from mtop_edge.formats.wordpiece import WordPieces

    pieces = WordPieces(load_tokenizer(tiny_bert / "tokenizer.json"))
    # a control character the normalizer removes (no piece at all), a character no piece covers, a long word
    utterance = "set \x13 an \u263a alarm for supercalifragilistic"
    words = split_words(utterance)
    ids, starts = pieces(utterance, words)
    assert len(starts) == len(words) and starts == sorted(set(starts))
    assert ids[0] == pieces.cls_id and ids[-1] == pieces.sep_id and len(ids) <= 128
    control = next(i for i, w in enumerate(words) if w.text == "\x13")
    assert ids[starts[control]] == pieces.unk_id  # no pieces: [UNK] holds its place
    assert ids[starts[words.index(next(w for w in words if w.text == "\u263a"))]] == pieces.unk_id
    # the packaged tokenizer's fixed padding (to 32 here, 128 in sentence-transformers' files) is off
    assert len(pieces("alarm", split_words("alarm"))[0]) == 3


def test_fp32_export_decodes_as_pytorch_does_token_for_token(
    tiny_encoder_pointer_model, tiny_encoder_pointer_export_fp32
):
    from mtop_edge.modeling.torch_engine import TorchParser

    out, manifest = tiny_encoder_pointer_export_fp32
    assert manifest["kind"] == "encoder-pointer" and manifest["decoder_layout"] == "encoder-cross-kv"
    assert manifest["parity"]["fp32_identical_share"] == 1.0 and manifest["parity"]["rows"] == 60
    assert manifest["fusion"]["encoder_model.onnx"]["Attention"] == 2  # one fused attention per encoder layer
    rows = [json.loads(line) for line in (SAMPLES / "eval_sample.jsonl").read_text().splitlines()][:80]
    torch_parser = TorchParser(tiny_encoder_pointer_model[0])
    parser = Parser.load(out, constraints="none")
    sources = [parser.source.prepare(r["utterance"]) for r in rows]
    expected = [
        ids[1:] for ids in torch_parser.generate_ids([s.ids for s in sources], [s.word_starts for s in sources])
    ]
    eos = parser.spec.eos_id
    for batch_size in (80, 7):  # one batch, and length-sorted slices
        decoded = parser.decode_sources(sources, batch_size=batch_size)
        got = [parser.original_ids(i) + ([eos] if e else []) for i, e in zip(decoded.ids, decoded.ended, strict=True)]
        assert got == expected


def test_fused_decoder_step_is_the_unfused_one_in_fewer_nodes(
    tiny_encoder_pointer_model, tiny_encoder_pointer_export_fp32, tmp_path
):
    import onnx

    from .conftest import export_tiny

    fused_dir, fused = tiny_encoder_pointer_export_fp32
    plain_dir = tmp_path / "unfused"
    plain = export_tiny(tiny_encoder_pointer_model, plain_dir, quantize="none", fuse=False, parity_rows=0)
    layers = json.loads((tiny_encoder_pointer_model[0] / "config.json").read_text())["num_decoder_layers"]
    step = fused["fusion"]["decoder_with_past_model.onnx"]
    assert step["MultiHeadAttention"] == 2 * layers and step["MatMuls packed"] == 2 * layers + 1
    assert "fusion" not in plain

    def ops(directory):
        graph = onnx.load(str(directory / "decoder_with_past_model.onnx"), load_external_data=False).graph
        return [n.op_type for n in graph.node]

    # the head reshapes are in the kernel; one transpose is left, the pointer keys' (onnxruntime folds it)
    assert ops(fused_dir).count("Transpose") == 1 < ops(plain_dir).count("Transpose")
    assert len(ops(fused_dir)) < len(ops(plain_dir)) / 2
    utterances = [json.loads(line)["utterance"] for line in (SAMPLES / "eval_sample.jsonl").read_text().splitlines()]
    rows = utterances[:80]
    fused_parser, plain_parser = Parser.load(fused_dir, constraints="none"), Parser.load(plain_dir, constraints="none")
    for batch_size in (80, 1):  # cross-attention padding in a batch, and the cache from empty one by one
        got = [r.logical_form for r in fused_parser.parse_batch(rows, batch_size=batch_size)]
        assert got == [r.logical_form for r in plain_parser.parse_batch(rows, batch_size=batch_size)]


def test_int8_export_keeps_constrained_exact_match_near_fp32(tiny_encoder_pointer_export, eval_sample):
    out, manifest = tiny_encoder_pointer_export
    parity = manifest["parity"]
    assert manifest["quantization"] == "int8"
    assert abs(parity["quantized_exact_match"] - parity["fp32_exact_match"]) <= INT8_EXACT_MATCH_BOUND
    ops = manifest["quantization_details"]["op_types"]["encoder_model.onnx"]
    assert "Attention" in ops and "EmbedLayerNormalization" in ops
    parser = Parser.load(out)
    trees = parser.parse_trees([e.utterance for e in eval_sample])
    assert all(t is not None for t in trees)  # constrained: always a tree
    assert sum(same_parse(t, e.tree) for t, e in zip(trees, eval_sample, strict=True)) > 0


def test_parse_command_runs_the_encoder_pointer_export(tiny_encoder_pointer_export):
    result = CliRunner().invoke(
        cli, ["parse", "--model", str(tiny_encoder_pointer_export[0]), "--json", "set an alarm"]
    )
    assert result.exit_code == 0, result.output
    record = json.loads(result.output)
    assert record["logical_form"].startswith("[IN:") and record["model"].startswith("model@")


def test_a_missing_encoder_says_how_to_get_it_and_exits_2(tmp_path):
    result = CliRunner().invoke(
        cli,
        [
            "train",
            "--recipe",
            str(ENCODER_POINTER_RECIPE),
            "--encoder",
            str(tmp_path / "absent"),
            "--data",
            str(SAMPLES / "train_sample.jsonl"),
            "--out",
            str(tmp_path / "out"),
        ],
    )
    assert result.exit_code == 2
    assert "--encoder DIR" in result.output and "Traceback" not in result.output
    unpackaged = CliRunner().invoke(
        cli,
        [
            "train",
            "--recipe",
            str(ENCODER_POINTER_RECIPE),
            "--encoder",
            "not-a-hub-id",
            "--data",
            str(SAMPLES / "train_sample.jsonl"),
            "--out",
            str(tmp_path / "out2"),
        ],
    )
    assert unpackaged.exit_code == 2 and "no such directory" in unpackaged.output


def test_recipe_conflicts_are_reported_together_before_any_work():
    from mtop_edge.training.recipe import Recipe

    with pytest.raises(ConfigError) as caught:
        Recipe.load(ENCODER_POINTER_RECIPE, pointing="markers", word_dropout=0.1, layer_decay=1.5)
    message = str(caught.value)
    assert 'pointing = "head"' in message and "word_dropout" in message and "layer_decay" in message


def test_layer_decay_gives_lower_layers_smaller_rates(tiny_encoder_pointer_model):
    from mtop_edge.modeling.encoder_pointer import EncoderPointerModel

    model = EncoderPointerModel.from_pretrained(tiny_encoder_pointer_model[0])
    groups = model.optimizer_groups(1e-3, 1e-4, 0.5, 0.01)
    rate_of = {id(p): g["lr"] for g in groups for p in g["params"]}
    named = dict(model.named_parameters())
    assert rate_of[id(named["encoder.embeddings.word_embeddings.weight"])] == pytest.approx(1e-4 * 0.5**2)
    assert rate_of[id(named["encoder.encoder.layer.0.attention.self.query.weight"])] == pytest.approx(1e-4 * 0.5)
    assert rate_of[id(named["encoder.encoder.layer.1.attention.self.query.weight"])] == pytest.approx(1e-4)
    assert rate_of[id(named["label_head.weight"])] == pytest.approx(1e-3)
    decay_of = {id(p): g["weight_decay"] for g in groups for p in g["params"]}
    assert decay_of[id(named["label_head.bias"])] == 0.0 and decay_of[id(named["label_head.weight"])] == 0.01


def test_cached_decoding_equals_decoding_the_whole_prefix(tiny_encoder_pointer_model):
    from mtop_edge.modeling.encoder_pointer import EncoderPointerModel, _shift_right

    model = EncoderPointerModel.from_pretrained(tiny_encoder_pointer_model[0]).eval()
    ids = torch.randint(5, 300, (2, 9))
    mask = torch.ones_like(ids)
    mask[1, 6:] = 0
    word_index = torch.full((2, model.config.num_pointers), -1)
    word_index[:, :4] = torch.tensor([1, 2, 3, 5])
    labels = torch.tensor(
        [[3, 5, model.config.pointer_start, 2, 2, 1], [4, 6, model.config.pointer_start + 1, 2, 2, 1]]
    )
    with torch.no_grad():
        encoded = model.encode(ids, mask, word_index)
        inputs = _shift_right(labels, model.config)
        whole, _ = model.decode(inputs, encoded)
        past, steps = None, []
        for t in range(inputs.shape[1]):
            logits, past = model.decode(inputs[:, t : t + 1], encoded, past)
            steps.append(logits)
    torch.testing.assert_close(torch.cat(steps, dim=1), whole, atol=1e-5, rtol=1e-4)
