from __future__ import annotations

import json

import pytest

from mtop_edge.bench.engines import ENGINES
from mtop_edge.bench.options import BenchOptions
from mtop_edge.bench.report import markdown
from mtop_edge.bench.run import bench_model, run_bench
from mtop_edge.bench.shapes import build_reference_shape
from mtop_edge.data import read_examples

from .conftest import SAMPLES, small_bench

TINY_SHAPE = {
    "vocab_size": 6000,
    "d_model": 32,
    "d_ff": 64,
    "num_layers": 1,
    "num_decoder_layers": 1,
    "num_heads": 2,
    "d_kv": 16,
    "feed_forward_proj": "gated-gelu",
    "tie_word_embeddings": False,
}


def test_suite_runs_every_engine_on_a_trained_model(tiny_model, tmp_path):
    profile = tmp_path / "two-file.toml"  # an export layout compared beside the built-in engines
    profile.write_text('name = "two-file"\nshare_weights = false\nquantize_embeddings = false\n')
    options = small_bench(tiny_model[0], tmp_path, engines=list(ENGINES), profiles=[profile], batch_sizes=[1, 4])
    result = run_bench(options, log=lambda _: None)
    rows = result["rows"]
    names = {r["engine"] + (f"-{r['variant']}" if r["variant"] else "") for r in rows}
    assert names == {*ENGINES, "mtop-edge@two-file"}
    assert {r["batch_size"] for r in rows} == {1, 4}
    for row in rows:
        assert row["model"] == tiny_model[0].name and row["threads"] == 1
        assert row["p50_ms"] > 0 and row["utterances_per_s"] > 0 and row["size_mb"] > 0 and row["peak_rss_mb"] > 0
        assert row["exact_match"] is not None
    # the same weights: the exported fp32 parser and PyTorch agree, so do their scores
    em = {(r["engine"], r["variant"]): r["exact_match"] for r in rows if r["batch_size"] == 1}
    # PyTorch's figure recomputed outside the bench: the same first 4 encodable rows, scored by `evaluate`'s metric
    from mtop_edge.bench.inputs import prepare_inputs
    from mtop_edge.core.spec import PointerSpec
    from mtop_edge.metrics import score
    from mtop_edge.modeling.torch_engine import TorchParser

    inputs = prepare_inputs(tiny_model[0], PointerSpec.load(tiny_model[0]), read_examples(options.data), 4, True)
    trees = TorchParser(tiny_model[0]).parse_batch([e.utterance for e in inputs.examples])
    assert em[("torch-fp32", "")] == score([e.tree for e in inputs.examples], trees).exact_match
    assert em[("mtop-edge-fp32", "unconstrained")] == em[("ctranslate2-fp32", "")]
    # the profile's export really is its own layout (two decoders, each with its weights), measured on its files
    sizes = {r["engine"]: r["size_mb"] for r in rows}
    assert sizes["mtop-edge@two-file"] > sizes["mtop-edge-int8"]
    saved = json.loads((tmp_path / "results" / f"{result['files']['json'].split('/')[-1]}").read_text())
    assert saved["machine"]["cores"] and saved["machine"]["versions"]["onnxruntime"]
    assert {"json", "markdown", "latency", "throughput"} <= set(result["files"])
    table = markdown(result)
    assert "| mtop-edge-int8 | 1 |" in table and "1.00x" in table
    # batched throughput against each engine, as the ratio of the rows' own figures
    at4 = {(r["engine"], r["variant"]): r["utterances_per_s"] for r in rows if r["batch_size"] == 4}
    ratio = at4[("mtop-edge-int8", "")] / at4[("ctranslate2-int8", "vmap")]
    assert f"| ctranslate2-int8 (vmap) | {ratio:.2f}x |" in table.split("Throughput of mtop-edge-int8")[1]


def test_throughput_only_runs_report_no_exact_match(tiny_model, tmp_path):
    """Without batch 1 (where outputs are kept and scored) a run still completes and reports."""
    options = small_bench(tiny_model[0], tmp_path, engines=["mtop-edge-int8"], batch_sizes=[4])
    result = run_bench(options, log=lambda _: None)
    assert [(r["batch_size"], r["exact_match"]) for r in result["rows"]] == [(4, None)]
    assert result["rows"][0]["utterances_per_s"] > 0
    assert "mtop-edge-int8" in markdown(result)


def test_random_weights_force_the_same_number_of_steps(tmp_path):
    checkpoint = build_reference_shape(tmp_path / "shape", SAMPLES / "train_sample.jsonl", shape=TINY_SHAPE)
    engines = ["mtop-edge-int8", "mtop-edge-int8-unconstrained", "torch-fp32", "ctranslate2-int8-vmap"]
    options = BenchOptions(
        engines=engines,
        threads=[1],
        batch_sizes=[1, 2],
        rows=3,
        throughput_rows=2,
        warmup=0,
        out=tmp_path / "results",
        work=tmp_path / "work",
    )
    rows = bench_model("shape", checkpoint, False, options, read_examples(SAMPLES / "eval_sample.jsonl"), print)
    # constrained decoding cannot force steps: it is left out on random weights
    assert {r["engine"] + (f"-{r['variant']}" if r["variant"] else "") for r in rows} == set(engines[1:])
    forced = {r["forced_steps"] for r in rows}
    assert len(forced) == 1 and 5 <= forced.pop() <= 20
    assert all(r["exact_match"] is None for r in rows)
    # and each engine really decodes exactly that many steps
    from mtop_edge.bench.artifacts import build_artifacts, needed_kinds
    from mtop_edge.bench.engines import load_engine
    from mtop_edge.core.spec import PointerSpec

    spec = PointerSpec.load(checkpoint)
    artifacts = build_artifacts(checkpoint, spec, needed_kinds(engines), tmp_path / "work", log=lambda _: None)
    sources = [[5, 6, 7, 1], [8, 1]]
    for engine in engines[1:]:
        outputs = load_engine(engine, artifacts, spec, threads=1, device="cpu").run(sources, [3, 1], None, 9)
        assert [len(o) for o in outputs] == [9, 9], engine


def test_bench_cli_rejects_bad_settings():
    from click.testing import CliRunner

    from mtop_edge.cli import cli

    result = CliRunner().invoke(cli, ["bench", "--engines", "mtop-edge-int8,tensorrt"])
    assert result.exit_code == 2 and "unknown engine(s) tensorrt" in result.output
    result = CliRunner().invoke(cli, ["bench", "--threads", "one"])
    assert result.exit_code == 2 and "comma-separated integers" in result.output


def test_bench_that_can_run_nothing_says_so_and_writes_nothing(tiny_encoder_pointer_model, tmp_path):
    from click.testing import CliRunner

    from mtop_edge.cli import cli

    arguments = ["bench", "--model", str(tiny_encoder_pointer_model[0]), "--no-reference-shape"]
    out = tmp_path / "results"
    result = CliRunner().invoke(cli, [*arguments, "--engines", "ctranslate2-int8", "--out", str(out)])
    assert result.exit_code != 0 and "no engine asked for can run these models" in result.output
    assert "Traceback" not in result.output and not out.exists()


@pytest.mark.parametrize("values", [[1.0], [3.0, 1.0, 2.0]])
def test_percentile(values):
    from mtop_edge.bench.stats import percentile

    assert percentile(values, 0.5) == sorted(values)[len(values) // 2]


def test_percentile_interpolates_between_ranks():
    from mtop_edge.bench.stats import percentile

    assert percentile([40.0, 10.0, 30.0, 20.0], 0.5) == 25.0  # halfway between 20 and 30
    assert percentile([1.0, 2.0, 3.0, 4.0, 5.0], 0.9) == pytest.approx(4.6)
    assert percentile([1.0, 2.0, 3.0, 4.0, 5.0], 0.99) == pytest.approx(4.96)
