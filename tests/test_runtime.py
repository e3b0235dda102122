from __future__ import annotations

import itertools
import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
from click.testing import CliRunner
from hypothesis import given, settings
from hypothesis import strategies as st

from mtop_edge.cli import cli
from mtop_edge.core.forms import Intent
from mtop_edge.core.pointer import split_words
from mtop_edge.core.spec import PointerSpec
from mtop_edge.core.vocab import TargetVocab
from mtop_edge.errors import DeviceError, InputError, ModelError
from mtop_edge.runtime import Parser
from mtop_edge.runtime.grammar import ConstrainedBatch, Grammar

from .conftest import SAMPLES, export_tiny

ROOT = Path(__file__).resolve().parents[1]
EVAL_ROWS = [json.loads(line) for line in (SAMPLES / "eval_sample.jsonl").read_text().splitlines()]


# -- the runtime is the checkpoint's parser ------------------------------------------------------


def test_unconstrained_runtime_equals_pytorch_greedy_token_for_token(tiny_model, tiny_export_fp32):
    from mtop_edge.torch_engine import TorchParser

    torch_parser = TorchParser(tiny_model[0])
    parser = Parser.load(tiny_export_fp32[0], constrain=False)
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


def test_constrained_output_is_always_well_formed(tiny_export):
    parser = Parser.load(tiny_export[0])
    results = parser.parse_batch([row["utterance"] for row in EVAL_ROWS], strict=False)
    assert all(r.ok for r in results), [r.error for r in results if not r.ok][:3]
    unconstrained = Parser.load(tiny_export[0], constrain=False).parse_batch(
        [row["utterance"] for row in EVAL_ROWS], strict=False
    )
    assert not all(r.ok for r in unconstrained)  # the tiny model needs the grammar


def test_no_decoder_step_runs_once_every_tree_is_closed(tiny_export):
    """With the grammar, EOS after a closed tree is forced: the loop writes it without a step."""
    parser = Parser.load(tiny_export[0])
    runs = []

    class CountingSession:  # the decoder runs its sessions' C objects (``_sess``) directly
        def __init__(self, session):
            self.session, self._sess = session, self

        def io_binding(self):
            return self.session.io_binding()

        def run_with_iobinding(self, binding, options):
            runs.append(1)
            return self.session._sess.run_with_iobinding(binding, options)

    parser.decoder.step = CountingSession(parser.decoder.step)
    for row in EVAL_ROWS[:20]:
        source = parser.source.prepare(row["utterance"])
        runs.clear()
        decoded = parser.decode_ids([source.ids], [len(source.words)])
        assert decoded.ended == [True]
        # one decoder graph gives every id (the encoder returns the cross-attention keys/values);
        # EOS would take one more step, the forced EOS none
        assert parser.decoder.first is None
        assert len(runs) == len(decoded.ids[0])


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


# -- the grammar: any logits give a well-formed tree ------------------------------------------------

VOCAB = TargetVocab(
    intents=("IN:A", "IN:B", "IN:C"),
    slots=("SL:X", "SL:Y"),
    max_pointers=12,
    root_intents=("IN:A", "IN:B"),
    intent_slots={"IN:A": ("SL:X", "SL:Y"), "IN:B": ("SL:Y",), "IN:C": ("SL:X",)},
    slot_intents={"SL:Y": ("IN:C",)},
)


def make_spec(vocab: TargetVocab) -> PointerSpec:
    return PointerSpec(vocab=vocab, symbol_ids=tuple(range(10, 10 + len(vocab.symbols))))


@settings(max_examples=150, deadline=None)
@given(
    seed=st.integers(0, 2**32 - 1),
    n_words=st.lists(st.integers(1, 12), min_size=1, max_size=6),
    cap=st.integers(3, 30),
    use_pairs=st.booleans(),
    untrimmed=st.booleans(),
)
def test_random_logits_always_decode_to_well_formed_trees(seed, n_words, cap, use_pairs, untrimmed):
    spec = make_spec(VOCAB)
    columns = spec.decoder_vocabulary()
    grammar = Grammar(spec, columns, use_pairs=use_pairs)
    # an untrimmed decoder has more ids than the grammar's columns; they must be ignored
    vocab_size = max(columns) + 5 if untrimmed else len(columns)
    outputs = _decode_random_logits(grammar, n_words, cap, seed, vocab_size, np.asarray(columns) if untrimmed else None)
    for row, ids in enumerate(outputs):
        original = [columns[i] for i in ids] if not untrimmed else ids
        utterance = " ".join(_distinct_words(n_words[row]))  # exactly n_words[row] words
        assert len(split_words(utterance)) == n_words[row]
        _assert_pointer_runs([spec._symbol_of_id.get(i, "") for i in original], n_words[row])
        tree = spec.decode(original, utterance, split_words(utterance))  # raises if malformed
        assert isinstance(tree, Intent)
        if use_pairs:
            assert tree.label in VOCAB.root_intents
            for intent in tree.walk_intents():
                assert all(s.label in VOCAB.intent_slots[intent.label] for s in intent.slots)
                for slot in intent.slots:  # only intents seen nested in that slot may nest there
                    if isinstance(slot.value, Intent):
                        assert slot.value.label in VOCAB.slot_intents[slot.label]


def _decode_random_logits(grammar, n_words, cap, seed, vocab_size, columns=None) -> list[list[int]]:
    """Constrained greedy picks over random logits until every row ends (it must, within ``cap``)."""
    rng = np.random.default_rng(seed)
    state = ConstrainedBatch(grammar, n_words, columns)
    chosen = np.empty(len(n_words), dtype=np.int64)
    outputs: list[list[int]] = [[] for _ in n_words]
    for t in range(cap):
        state.pick(rng.normal(scale=5.0, size=(len(n_words), vocab_size)).astype(np.float32), cap - t, chosen)
        for row, token in enumerate(chosen.tolist()):
            outputs[row].append(token)
        if state.finished.all():
            break
    assert state.finished.all()
    return outputs


@settings(max_examples=80, deadline=None)
@given(
    seed=st.integers(0, 2**32 - 1),
    n_words=st.lists(st.integers(1, 12), min_size=2, max_size=6),
    cap=st.integers(6, 30),
    separated=st.booleans(),
    data=st.data(),
)
def test_rows_kept_after_a_drop_pick_what_they_would_have(seed, n_words, cap, separated, data):
    """`ConstrainedBatch.keep` (rows leaving the decoder's batch) leaves the kept rows' states as they
    were: fed the same logits rows, they pick the same ids as in the batch that kept everyone."""
    spec = PointerSpec(
        vocab=VOCAB, symbol_ids=tuple(range(10, 10 + len(VOCAB.symbols))), separator_id=5 if separated else None
    )
    grammar = Grammar(spec, spec.decoder_vocabulary())
    rng = np.random.default_rng(seed)
    logits = rng.normal(scale=5.0, size=(cap, len(n_words), grammar.size)).astype(np.float32)
    drop_at = data.draw(st.integers(1, cap - 1))
    keep = np.array(data.draw(st.lists(st.booleans(), min_size=len(n_words), max_size=len(n_words))))
    keep[data.draw(st.integers(0, len(n_words) - 1))] = True  # at least one row goes on
    whole, part = ConstrainedBatch(grammar, n_words), ConstrainedBatch(grammar, n_words)
    picked_whole, picked_part = np.empty(len(n_words), dtype=np.int64), np.empty(len(n_words), dtype=np.int64)
    for t in range(cap):
        if t == drop_at:
            part.keep(keep)
        rows = keep if t >= drop_at else np.ones(len(n_words), dtype=bool)
        whole.pick(logits[t], cap - t, picked_whole)
        part.pick(np.ascontiguousarray(logits[t][rows]), cap - t, picked_part[: rows.sum()])
        assert picked_part[: rows.sum()].tolist() == picked_whole[rows].tolist()
    assert part.finished.tolist() == whole.finished[keep].tolist()
    assert part.root_closed.tolist() == whole.root_closed[keep].tolist()


def _assert_pointer_runs(symbols: list[str], n_words: int) -> None:
    """The tree rules on pointers, checked on the symbols themselves: inside a slot they are
    consecutive word indices below the word count, and they appear nowhere else."""
    from mtop_edge.core.pointer import pointer_index

    stack: list[str] = []
    previous: int | None = None
    for symbol in symbols:
        if symbol == "":  # EOS
            break
        index = pointer_index(symbol)
        if index is not None:
            assert stack and stack[-1].startswith("[SL:"), f"pointer {symbol} outside a slot"
            assert index < n_words and (previous is None or index == previous + 1), symbols
            previous = index
        elif symbol == "]":
            stack.pop()
            previous = None
        else:
            stack.append(symbol)
            previous = None


# -- no torch on the parse path --------------------------------------------------------------------


def test_wrong_argument_types_are_a_clear_type_error(tiny_export):
    parser = Parser.load(tiny_export[0])
    with pytest.raises(TypeError, match="use parse_batch"):
        parser.parse(["set an alarm"])
    with pytest.raises(TypeError, match="sequence of str"):
        parser.parse_batch("set an alarm")  # would otherwise parse each character
    with pytest.raises(TypeError, match="sequence of str"):
        parser.parse_batch(["set an alarm", None])


def test_parse_never_imports_torch_or_transformers(tiny_export):
    code = (
        "import sys\n"
        "from click.testing import CliRunner\n"
        "import mtop_edge\n"
        "from mtop_edge.cli import cli\n"
        f"r = CliRunner().invoke(cli, ['parse', '--model', {str(tiny_export[0])!r}, 'set an alarm'])\n"
        "assert r.exit_code == 0, r.output\n"
        "p = mtop_edge.Parser.load(" + repr(str(tiny_export[0])) + ")\n"
        "p.parse_batch(['call mom', 'weather today'])\n"
        "heavy = sorted(m for m in sys.modules if m.split('.')[0] in ('torch', 'transformers', 'optimum'))\n"
        "print(heavy)\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, check=False)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"


# -- the command line and bad input ---------------------------------------------------------------


def run(*args, input=None):
    return CliRunner().invoke(cli, ["parse", *args], input=input)


def test_parse_prints_the_logical_form_and_json(tiny_export):
    model = str(tiny_export[0])
    plain = run("--model", model, "set an alarm for 7am")
    assert plain.exit_code == 0 and plain.output.startswith("[IN:")
    record = json.loads(run("--model", model, "--json", "set an alarm for 7am").output)
    assert record["utterance"] == "set an alarm for 7am" and record["logical_form"] == plain.output.strip()


@pytest.mark.parametrize("utterance", ["", "   ", "\t"])
def test_empty_utterance_is_a_one_line_error_with_exit_code_2(tiny_export, utterance):
    result = run("--model", str(tiny_export[0]), utterance)
    assert result.exit_code == 2
    assert result.output.strip() == "Error: empty utterance: nothing to parse"
    with pytest.raises(InputError):
        Parser.load(tiny_export[0]).parse(utterance)


def test_too_many_words_is_an_error_unless_truncated(tiny_export):
    model = str(tiny_export[0])
    limit = Parser.load(model).spec.vocab.max_pointers
    long = " ".join(["alarm"] * (limit + 5))
    result = run("--model", model, long)
    assert result.exit_code == 2
    assert f"has {limit + 5} words but the model can point to at most {limit}" in result.output
    flagged = json.loads(run("--model", model, "--json", "--truncate", long).output)
    assert flagged["truncated"] is True


def test_stream_parses_good_lines_and_reports_bad_ones(tiny_export):
    data = b"set an alarm\n\n\xff\xfebad bytes\ncall mom\r\n   \nweather in Paris"
    result = CliRunner().invoke(cli, ["parse", "--model", str(tiny_export[0]), "-", "--batch-size", "2"], input=data)
    assert result.exit_code == 1
    records = [json.loads(line) for line in result.stdout.splitlines()]
    assert [r["line"] for r in records] == [1, 2, 3, 4, 5, 6]
    assert [("error" in r) for r in records] == [False, True, True, False, True, False]
    assert "invalid UTF-8" in records[2]["error"]
    assert records[3]["utterance"] == "call mom" and records[3]["logical_form"].startswith("[IN:")
    assert "3 line(s) could not be parsed" in result.stderr


def test_input_file_streams_json_lines(tiny_export, tmp_path):
    path = tmp_path / "in.txt"
    path.write_text("set an alarm\ncall mom\n")
    result = run("--model", str(tiny_export[0]), "--input", str(path))
    assert result.exit_code == 0
    assert [json.loads(line)["utterance"] for line in result.output.splitlines()] == ["set an alarm", "call mom"]


def test_usage_errors():
    assert run().exit_code == 2
    assert "give one UTTERANCE" in run().output


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
            lambda d: _edit_manifest(d, lambda m: m.pop("encoder_cross_kv")),
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
    from mtop_edge.runtime import parser as parser_module

    monkeypatch.setattr(parser_module, "DEFAULT_MODEL_DIR", tmp_path / "default")
    result = run("set an alarm")
    assert result.exit_code == 1 and "no default model is embedded" in result.output and "--model" in result.output


def test_cuda_without_a_cuda_build_is_a_clear_error(tiny_export):
    if "CUDAExecutionProvider" in ort.get_available_providers():
        pytest.skip("this onnxruntime has CUDA: the error path cannot be reached")
    with pytest.raises(DeviceError, match="has no CUDA provider"):
        Parser.load(tiny_export[0], device="cuda")
    result = run("--model", str(tiny_export[0]), "--device", "cuda", "call mom")
    assert result.exit_code == 1 and "onnxruntime-gpu" in result.output


@pytest.mark.cuda
@pytest.mark.skipif("CUDAExecutionProvider" not in ort.get_available_providers(), reason="needs onnxruntime-gpu")
def test_cuda_runtime_matches_cpu(tiny_export_fp32):
    utterances = [row["utterance"] for row in EVAL_ROWS[:64]]
    cpu = Parser.load(tiny_export_fp32[0], constrain=False)
    cuda = Parser.load(tiny_export_fp32[0], constrain=False, device="cuda")
    assert cuda.decoder.encoder.get_providers()[0] == "CUDAExecutionProvider"
    assert [r.logical_form for r in cuda.parse_batch(utterances, strict=False)] == [
        r.logical_form for r in cpu.parse_batch(utterances, strict=False)
    ]


def test_evaluate_onnx_engine_reports_constrained_and_not(tiny_export):
    args = [
        "evaluate",
        "--engine",
        "onnx",
        "--model",
        str(tiny_export[0]),
        "--data",
        str(SAMPLES / "eval_sample.jsonl"),
        "--limit",
        "60",
        "--json",
    ]
    constrained = json.loads(CliRunner().invoke(cli, args).output)
    free = json.loads(CliRunner().invoke(cli, [*args, "--no-constrain"]).output)
    assert constrained["engine"] == "onnx" and constrained["constrain"] is True and constrained["n"] == 60
    assert constrained["well_formed"] == 1.0
    assert free["constrain"] is False and free["well_formed"] < 1.0


@pytest.mark.cuda
@pytest.mark.skipif("CUDAExecutionProvider" not in ort.get_available_providers(), reason="needs onnxruntime-gpu")
def test_cuda_fp16_export_is_finite_and_agrees_with_fp32(tiny_model, tiny_export_fp32, tmp_path):
    export_tiny(tiny_model, tmp_path / "fp16", quantize="fp16", parity_rows=0)
    utterances = [row["utterance"] for row in EVAL_ROWS[:64]]
    fp32 = Parser.load(tiny_export_fp32[0], constrain=False, device="cuda")
    fp16 = Parser.load(tmp_path / "fp16", constrain=False, device="cuda")
    assert fp16.decoder.step.get_providers()[0] == "CUDAExecutionProvider"
    same = sum(
        a.logical_form == b.logical_form
        for a, b in zip(
            fp16.parse_batch(utterances, strict=False), fp32.parse_batch(utterances, strict=False), strict=True
        )
    )
    assert same / len(utterances) >= 0.9
    constrained = Parser.load(tmp_path / "fp16", device="cuda").parse_batch(utterances, strict=False)
    assert all(r.ok for r in constrained)


def test_one_shared_thread_pool_per_process(tiny_export):
    # in a process of its own: onnxruntime's global pool can be sized once, and then serves every session
    code = (
        "import sys\n"
        "from mtop_edge.runtime import Parser, share_thread_pool\n"
        "assert share_thread_pool(2) and share_thread_pool(2) and not share_thread_pool(1)\n"
        f"parser = Parser.load({str(tiny_export[0])!r}, threads=2)\n"
        "print(parser.parse('set an alarm for 7am').ok)\n"
    )
    result = subprocess.run([sys.executable, "-c", code], check=False, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "True"
    # the console command shares its pool; its answer is the in-process one
    command = [sys.executable, "-m", "mtop_edge", "parse", "--model", str(tiny_export[0]), "--threads", "2"]
    shared = subprocess.run(
        [*command, "set an alarm for 7am"], check=False, capture_output=True, text=True, timeout=120
    )
    assert shared.returncode == 0, shared.stderr
    assert shared.stdout.strip() == Parser.load(tiny_export[0]).parse("set an alarm for 7am").logical_form


def _distinct_words(count: int) -> list[str]:
    return ["".join(chr(97 + (i // 26**k) % 26) for k in range(3)) + "z" for i in range(count)]


def test_truncation_keeps_the_first_words(tiny_export):
    source = Parser.load(tiny_export[0]).source
    limit = source.spec.vocab.max_pointers
    words = _distinct_words(limit + 7)
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


def test_outputs_closed_at_the_step_cap_are_flagged(tiny_export):
    utterances = [row["utterance"] for row in EVAL_ROWS[:20]]
    capped = Parser.load(tiny_export[0], max_steps=6).parse_batch(utterances)
    assert all(r.ok for r in capped)  # the grammar still closes every tree...
    flagged = [r for r in capped if r.capped]
    assert flagged and all(r.to_json()["capped"] is True for r in flagged)  # ...and says it had to
    free = Parser.load(tiny_export[0], max_steps=6, constrain=False).parse_batch(utterances, strict=False)
    assert all(r.capped for r in free if not r.ok and "no end of sequence" in r.error)


def test_in_process_callers_keep_per_session_pools(tiny_export):
    # the CLI invoked in-process and the bench's engine class must not turn on onnxruntime's global
    # pool: it would then refuse every other library's session in the host process
    from mtop_edge.bench.engines import MtopEdgeEngine

    assert run("--model", str(tiny_export[0]), "--threads", "2", "call mom").exit_code == 0
    MtopEdgeEngine(tiny_export[0], threads=2, device="cpu", constrain=True)
    session = ort.InferenceSession(str(tiny_export[0] / "encoder_model.onnx"), providers=["CPUExecutionProvider"])
    assert session.get_inputs()[0].name == "input_ids"


@settings(max_examples=100, deadline=None)
@given(
    seed=st.integers(0, 2**32 - 1),
    n_words=st.lists(st.integers(1, 12), min_size=1, max_size=6),
    cap=st.integers(5, 40),
    close_needs_separator=st.booleans(),
)
def test_separated_models_get_a_separator_before_each_symbol_but_the_first(seed, n_words, cap, close_needs_separator):
    """DAMP-style targets: ``[IN:X ▁ [SL:Y ▁ <pt-2> ▁] ▁]`` (or ``▁ ]`` when ']' is not self-spaced)."""
    separator = 5
    spec = PointerSpec(
        vocab=VOCAB,
        symbol_ids=tuple(range(10, 10 + len(VOCAB.symbols))),
        separator_id=separator,
        close_needs_separator=close_needs_separator,
    )
    columns = spec.decoder_vocabulary()
    grammar = Grammar(spec, columns)
    outputs = _decode_random_logits(grammar, n_words, cap, seed, len(columns))
    close = spec.symbol_ids[spec.symbols.index("]")]
    for row, exported in enumerate(outputs):
        ids = [columns[i] for i in exported]
        body = ids[: ids.index(spec.eos_id)]
        for previous, current in itertools.pairwise(body):
            needs = current != separator and (current != close or close_needs_separator)
            assert (previous == separator) == needs, body
        assert body[0] != separator and body[-1] != separator
        utterance = " ".join(_distinct_words(n_words[row]))
        assert isinstance(spec.decode(body, utterance, split_words(utterance)), Intent)


def test_default_slice_size_follows_the_device_and_the_model_width(tiny_export):
    from types import SimpleNamespace

    from mtop_edge.runtime.parser import MAX_BATCH, WIDE_MODEL_BATCH, default_encoder_rows, default_max_batch

    def manifest(d_model):
        return SimpleNamespace(architecture=SimpleNamespace(d_model=d_model))

    assert default_max_batch(manifest(192), "cpu") == MAX_BATCH["cpu"] == 12
    assert default_max_batch(manifest(512), "cpu") == WIDE_MODEL_BATCH == 32
    assert default_max_batch(manifest(512), "cuda") == MAX_BATCH["cuda"]
    assert default_encoder_rows(manifest(512), "cpu") == 8
    assert default_encoder_rows(manifest(192), "cpu") is None and default_encoder_rows(manifest(512), "cuda") is None
    assert Parser.load(tiny_export[0]).max_batch == 12 and Parser.load(tiny_export[0], max_batch=5).max_batch == 5


@pytest.mark.parametrize("export", ["tiny_export_fp32", "tiny_pointer_export_fp32", "first-step decoder"])
def test_encoding_a_batch_in_groups_changes_no_output(export, request, tmp_path):
    """The encoder in length-sorted groups, outputs zero-padded back to the batch's width, gives the
    decoder exactly what one encoder call on the whole padded batch gives (fp32: token for token):
    the cross-attention keys/values from the encoder, the pointer head's memory, and the hidden
    states a first-step decoder reads (exports without encoder_cross_kv)."""
    if export == "first-step decoder":
        model_dir = tmp_path / "first-step"
        export_tiny(request.getfixturevalue("tiny_model"), model_dir, quantize="none", encoder_cross_kv=False)
    else:
        model_dir = request.getfixturevalue(export)[0]
    parser = Parser.load(model_dir, constrain=False)
    sources, counts = [], []
    for row in EVAL_ROWS[:48]:
        source = parser.source.prepare(row["utterance"])
        sources.append(source.ids)
        counts.append(len(source.words))
    assert len(set(map(len, sources))) > 5  # rows of many lengths: groups pad differently from the batch
    whole = parser.decode_ids(sources, counts, batch_size=48).ids
    for rows in (1, 5, 16):
        parser.decoder.encoder_rows = rows
        assert parser.decode_ids(sources, counts, batch_size=48).ids == whole


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
            encoder_cross_kv=False,
            merged=merged,
            fuse=not merged,
            parity_rows=0,
        )
    else:
        model_dir = request.getfixturevalue(export)[0]
    parser = Parser.load(model_dir, constrain=constrain)
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
