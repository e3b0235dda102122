"""Confidence: probabilities consistent with the decoder's choices, in every output form."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from mtop_edge.core.spec import PointerSpec
from mtop_edge.core.vocab import TargetVocab
from mtop_edge.runtime import Parser
from mtop_edge.runtime.confidence import chosen_logprobs, node_confidences
from mtop_edge.runtime.grammar import ConstrainedBatch, Grammar

from .conftest import parse_command


def test_chosen_logprob_is_the_softmax_over_the_allowed_columns():
    masked = np.array([[2.0, -np.inf, 0.5, -np.inf], [0.0, 0.0, 0.0, 0.0]], dtype=np.float32)
    picked = masked.argmax(axis=1)
    out = np.empty(2, dtype=np.float32)
    chosen_logprobs(masked.copy(), picked, out)
    assert math.exp(out[0]) == pytest.approx(math.exp(2.0) / (math.exp(2.0) + math.exp(0.5)), rel=1e-6)
    assert math.exp(out[1]) == pytest.approx(0.25, rel=1e-6)
    chosen_logprobs(masked.copy(), picked, out, temperature=2.0)  # a temperature flattens, never re-ranks
    assert math.exp(out[0]) == pytest.approx(math.exp(1.0) / (math.exp(1.0) + math.exp(0.25)), rel=1e-6)


def test_the_grammar_renormalises_over_what_it_allows():
    vocab = TargetVocab(intents=("IN:A", "IN:B"), slots=("SL:X",), max_pointers=3)
    spec = PointerSpec(vocab=vocab, symbol_ids=tuple(range(3, 3 + len(vocab.symbols))))
    columns = spec.decoder_vocabulary()
    grammar = Grammar(spec, columns, use_pairs=False)
    batch = ConstrainedBatch(grammar, [2])
    scores = np.zeros((1, len(columns)), dtype=np.float32)
    intent_a, intent_b = columns.index(spec.symbol_ids[0]), columns.index(spec.symbol_ids[1])
    scores[0, intent_a], scores[0, intent_b] = 3.0, 1.0
    scores[0, columns.index(spec.eos_id)] = 50.0  # not allowed at the root: gets no share
    chosen, logprob = np.empty(1, dtype=np.int64), np.empty(1, dtype=np.float32)
    batch.pick(scores, 10, chosen, logprob)
    assert chosen[0] == intent_a  # only the two intents are allowed first
    assert math.exp(logprob[0]) == pytest.approx(math.exp(3.0) / (math.exp(3.0) + math.exp(1.0)), rel=1e-5)


def test_node_confidences_follow_the_tree_in_preorder():
    symbols = ["[IN:A", "[SL:X", "@ptr0", "@ptr1", "]", "[SL:Y", "[IN:B", "]", "]", "]", None]
    logprobs = [math.log(p) for p in (0.9, 0.8, 0.7, 0.6, 0.5, 0.4, 0.3, 0.2, 0.1, 0.95, 1.0)]
    intent_a, slot_x, slot_y, intent_b = node_confidences(symbols, logprobs)
    assert intent_a == pytest.approx(0.9)  # the intent: its label's step
    assert slot_x == pytest.approx(0.8 * 0.7 * 0.6 * 0.5)  # label, pointers, closing bracket
    assert slot_y == pytest.approx(0.4 * 0.1)  # label and closing bracket; the nested intent is its own
    assert intent_b == pytest.approx(0.3)
    # a separator's step (None) counts with the symbol after it
    assert node_confidences(["[IN:A", None, "]"], [math.log(0.5), math.log(0.5), 0.0]) == [pytest.approx(0.5)]


def test_a_parse_confidence_is_the_product_of_its_steps(tiny_export, eval_sample):
    parser = Parser.load(tiny_export[0])
    sources = [parser.source.prepare(e.utterance) for e in eval_sample[:40]]
    decoded = parser.decode_sources(sources)
    results = parser.parse_batch([e.utterance for e in eval_sample[:40]])
    for result, ids, logprobs, ended in zip(results, decoded.ids, decoded.logprobs, decoded.ended, strict=True):
        assert ended and len(logprobs) == len(ids) + 1  # one per id, and the EOS step
        assert all(lp <= 1e-6 for lp in logprobs)
        assert 0.0 < result.confidence <= 1.0
        assert result.confidence == pytest.approx(math.exp(sum(logprobs)), rel=1e-5)
        assert result.confidence <= min(result.node_confidences) + 1e-6  # every node is part of the sequence


def test_unconstrained_confidence_is_the_full_softmax_of_each_chosen_token(tiny_export_fp32, eval_sample):
    """Checked by a second, independent pass: the exported graphs run with plain ``session.run``."""
    import onnxruntime as ort

    from mtop_edge.core.source import encoder_feed

    model_dir = tiny_export_fp32[0]
    parser = Parser.load(model_dir, constraints="none")
    source = parser.source.prepare(eval_sample[3].utterance)
    decoded = parser.decode_sources([source])
    encoder = ort.InferenceSession(str(model_dir / "encoder_model.onnx"), providers=["CPUExecutionProvider"])
    one_row_step = parser.decoder.plan.calls(1)[1].file  # the step a one-row call runs (no row groups)
    step = ort.InferenceSession(str(model_dir / one_row_step), providers=["CPUExecutionProvider"])
    feed = encoder_feed([source.ids], parser.spec)
    encoded = dict(zip([o.name for o in encoder.get_outputs()], encoder.run(None, feed), strict=True))
    arch = parser.manifest.architecture
    empty = np.zeros((1, arch.num_heads, 0, arch.d_kv), np.float32)
    past = dict.fromkeys(arch.past_names("past_key_values", "decoder"), empty)
    inputs = {i.name for i in step.get_inputs()}
    token, expected = parser.decoder.start_id, []
    for chosen in [*decoded.ids[0], parser.decoder.eos_id]:
        values = {"input_ids": np.array([[token]]), "encoder_attention_mask": feed["attention_mask"], **past}
        values.update({n: encoded[n.replace("past_key_values", "present")] for n in inputs if ".encoder." in n})
        values.update({n: encoded[n] for n in inputs if n.startswith("pointer_")})
        outputs = dict(zip([o.name for o in step.get_outputs()], step.run(None, values), strict=True))
        logits = outputs["logits"][0, -1].astype(np.float64)
        assert logits.argmax() == chosen
        expected.append(logits[chosen] - np.log(np.exp(logits - logits.max()).sum()) - logits.max())
        past = {n: outputs[n.replace("past_key_values", "present")] for n in past}
        token = chosen
    assert decoded.logprobs[0] == pytest.approx(expected, abs=1e-4)


def test_min_confidence_marks_parses_not_understood_and_keeps_the_tree(tiny_export, eval_sample):
    utterances = [e.utterance for e in eval_sample[:30]]
    plain = Parser.load(tiny_export[0]).parse_batch(utterances)
    threshold = sorted(r.confidence for r in plain)[15]
    strict = Parser.load(tiny_export[0], min_confidence=threshold).parse_batch(utterances)
    for a, b in zip(plain, strict, strict=True):
        assert a.logical_form == b.logical_form and a.understood
        assert b.understood == (b.confidence >= threshold)
    assert any(not r.understood for r in strict) and any(r.understood for r in strict)
    with pytest.raises(ValueError, match="probability"):
        Parser.load(tiny_export[0], min_confidence=1.5)


def test_json_output_carries_every_confidence(tiny_export):
    result = parse_command("--model", str(tiny_export[0]), "--json", "--min-confidence", "0.999999", "call mom")
    assert result.exit_code == 0, result.output
    record = json.loads(result.output)
    assert 0.0 < record["confidence"] <= 1.0 and 0.0 < record["intent_confidence"] <= 1.0
    assert record["understood"] is (record["confidence"] >= 0.999999)

    def slots(items):
        for slot in items:
            yield slot
            yield from slots(slot.get("intent", {}).get("slots", []))

    assert all(0.0 < s["confidence"] <= 1.0 for s in slots(record["slots"]))
    bad = parse_command("--model", str(tiny_export[0]), "--min-confidence", "2", "call mom")
    assert bad.exit_code == 2 and "Traceback" not in bad.output
