from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from mtop_edge.config import ConfigError
from mtop_edge.core.spec import PointerSpec
from mtop_edge.errors import MtopEdgeError
from mtop_edge.training.recipe import Recipe

from .conftest import SAMPLES, TINY_RECIPE

ROOT = Path(__file__).resolve().parents[1]
QUICK = {
    "max_steps": 8,
    "eval_steps": 4,
    "logging_steps": 2,
    "d_model": 32,
    "d_ff": 64,
    "num_layers": 1,
    "num_decoder_layers": 1,
    "d_kv": 16,
}


def log_lines(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / "train_log.jsonl").read_text().splitlines()]


def test_tiny_recipe_trains_and_its_loss_falls(tiny_model):
    out, summary = tiny_model
    losses = [row["loss"] for row in log_lines(out) if "loss" in row]
    assert len(losses) >= 4
    assert losses[-1] < 0.5 * losses[0]
    assert summary["global_step"] == 240
    # evaluating the same weights again gives the same figures (the eval order is fixed)
    best_step = int(summary["best_checkpoint"].rsplit("-", 1)[1])
    logged = next(r for r in log_lines(out) if r["step"] == best_step and "eval_loss" in r)
    assert logged["eval_loss"] == pytest.approx(summary["eval"]["loss"], abs=1e-6)
    assert logged["eval_exact_match"] == summary["eval"]["exact_match"]
    # a Hugging Face checkpoint plus what decoding needs
    from transformers import AutoModelForSeq2SeqLM

    model = AutoModelForSeq2SeqLM.from_pretrained(out)
    spec = PointerSpec.load(out)
    assert model.get_input_embeddings().num_embeddings >= max(spec.symbol_ids) + 1
    assert spec.markers and spec.vocab.max_pointers == 40
    assert spec.max_target_tokens > 10
    assert (out / "spiece.model").is_file() and (out / "recipe.toml").is_file()
    assert Recipe.load(out / "recipe.toml") == Recipe.load(TINY_RECIPE)


def test_resume_after_interruption_finishes_the_same_run(tmp_path):
    from transformers import TrainerCallback

    from mtop_edge.training.train import train

    class Crash(TrainerCallback):
        def on_save(self, args, state, control, **kwargs):
            if state.global_step == 4:
                raise KeyboardInterrupt("simulated interruption")

    recipe = Recipe.load(TINY_RECIPE, **QUICK)
    data = SAMPLES / "train_sample.jsonl"
    with pytest.raises(KeyboardInterrupt):
        train(recipe, data, tmp_path / "resumed", extra_callbacks=[Crash()])
    assert (tmp_path / "resumed" / "checkpoints" / "checkpoint-4").is_dir()
    assert not (tmp_path / "resumed" / "model.safetensors").exists()
    with pytest.raises(MtopEdgeError, match="is not empty: pass --resume"):
        train(recipe, data, tmp_path / "resumed")
    resumed = train(recipe, data, tmp_path / "resumed", resume=True)
    straight = train(recipe, data, tmp_path / "straight")
    assert resumed["global_step"] == straight["global_step"] == 8
    # the resumed run trained only steps 5-8 after the interruption
    steps = [row["step"] for row in log_lines(tmp_path / "resumed") if "loss" in row]
    assert steps == [2, 4, 6, 8]
    assert resumed["eval"]["loss"] == pytest.approx(straight["eval"]["loss"], rel=1e-4)


def test_resume_without_a_checkpoint_is_a_clear_error(tmp_path):
    from mtop_edge.training.train import train

    with pytest.raises(MtopEdgeError, match="no checkpoint to resume from"):
        train(Recipe.load(TINY_RECIPE, **QUICK), SAMPLES / "train_sample.jsonl", tmp_path / "x", resume=True)


def test_recipe_validation(tmp_path):
    assert Recipe.load(TINY_RECIPE, max_steps=3).max_steps == 3
    assert Recipe.load(None, learning_rate=1).learning_rate == 1.0
    with pytest.raises(ConfigError, match="unknown field"):
        Recipe.load(None, steps=3)
    with pytest.raises(ConfigError, match="max_steps must be int"):
        Recipe.load(None, max_steps="3")
    with pytest.raises(ConfigError, match="select_by must be one of eval_loss, exact_match"):
        Recipe.load(None, select_by="bleu")
    bad = tmp_path / "bad.toml"
    bad.write_text("max_steps = = 3")
    with pytest.raises(ConfigError, match="invalid TOML"):
        Recipe.load(bad)
    for recipe in (ROOT / "training").glob("*.toml"):
        assert Recipe.load(recipe).name == recipe.stem


def test_two_cpu_processes_train_together(tmp_path):
    out = tmp_path / "ddp"
    overrides = [f"--{k.replace('_', '-')}={v}" for k, v in QUICK.items()]
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "torch.distributed.run",
            "--standalone",
            "--nproc-per-node",
            "2",
            "-m",
            "mtop_edge",
            "train",
            "--recipe",
            str(TINY_RECIPE),
            "--data",
            str(SAMPLES / "train_sample.jsonl"),
            "--out",
            str(out),
            *overrides,
        ],
        capture_output=True,
        text=True,
        env=env,
        timeout=600,
        check=False,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    ranks = [json.loads((out / "checkpoints" / f"rank-{r}.json").read_text()) for r in (0, 1)]
    assert [r["rank"] for r in ranks] == [0, 1]
    assert all(r["world_size"] == 2 and r["global_step"] == 8 and r["forwards"] >= 8 for r in ranks)
    assert ranks[0]["first_batch_ids"] != ranks[1]["first_batch_ids"]  # each rank saw its own shard
    assert "world size 2" in result.stdout
    assert (out / "model.safetensors").is_file()


def test_fine_tuning_starts_from_a_local_checkpoint(tiny_model, tmp_path):
    """The reference recipe's path (init = hub id or local checkpoint), here with a local directory."""
    from mtop_edge.training.train import train

    recipe = Recipe.load(
        ROOT / "training" / "mt5-small.toml",
        init=str(tiny_model[0]),
        max_steps=4,
        per_device_batch_size=8,
        gradient_accumulation_steps=2,
        eval_steps=4,
        eval_holdout=20,
        logging_steps=2,
        device="cpu",
    )
    summary = train(recipe, SAMPLES / "train_sample.jsonl", tmp_path / "tuned")
    assert summary["global_step"] == 4
    base, tuned = PointerSpec.load(tiny_model[0]), PointerSpec.load(tmp_path / "tuned")
    assert not tuned.markers
    # symbols the checkpoint's tokenizer already had keep their ids; new ones are appended after them
    base_ids = dict(zip(base.symbols, base.symbol_ids, strict=True))
    shared = [s for s in tuned.symbols if s in base_ids]
    assert shared and all(tuned.symbol_ids[tuned.symbols.index(s)] == base_ids[s] for s in shared)
    assert all(
        i > max(base.symbol_ids) for s, i in zip(tuned.symbols, tuned.symbol_ids, strict=True) if s not in base_ids
    )
    from transformers import AutoModelForSeq2SeqLM

    AutoModelForSeq2SeqLM.from_pretrained(tmp_path / "tuned")


def test_average_last_saves_the_mean_of_the_last_checkpoints(tmp_path):
    import torch
    from safetensors.torch import load_file

    from mtop_edge.training.averaging import last_checkpoints
    from mtop_edge.training.train import train

    recipe = Recipe.load(TINY_RECIPE, **{**QUICK, "eval_steps": 2, "average_last": 3})
    summary = train(recipe, SAMPLES / "train_sample.jsonl", tmp_path / "avg")
    assert summary["averaged_checkpoints"] == ["checkpoint-4", "checkpoint-6", "checkpoint-8"]
    saved = load_file(str(tmp_path / "avg" / "model.safetensors"))
    parts = [
        load_file(str(tmp_path / "avg" / "checkpoints" / name / "model.safetensors"))
        for name in summary["averaged_checkpoints"]
    ]
    name = "encoder.block.0.layer.1.DenseReluDense.wo.weight"
    assert not torch.equal(parts[0][name], parts[2][name])  # the checkpoints differ, so the mean is not any one of them
    for key, tensor in saved.items():
        torch.testing.assert_close(tensor, sum(p[key] for p in parts) / 3)
    with pytest.raises(MtopEdgeError, match="cannot average the last 9"):
        last_checkpoints(tmp_path / "avg" / "checkpoints", 9)
