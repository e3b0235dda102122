"""`mtop-edge train`: read the data, build the tokenizer, spec and model the recipe asks for, run
the Trainer, write the checkpoint (heavy dependencies; imported by the command).

One process or many: launched with ``torchrun`` / ``accelerate launch`` the Trainer runs DDP with
no change here. The output directory is a Hugging Face checkpoint (``from_pretrained`` loads it)
plus the source tokenizer (``spiece.model`` or ``tokenizer.json``), ``pointer.json`` and the resolved
``recipe.toml``; ``checkpoints/`` inside it is the resume point.
"""

from __future__ import annotations

import dataclasses
import json
import os
import random
import shutil
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from mtop_edge.core.spec import PointerSpec
from mtop_edge.core.vocab import TargetVocab
from mtop_edge.data import Example, read_examples
from mtop_edge.errors import DataError, DeviceError, MtopEdgeError, require
from mtop_edge.training import tokenizer as tokenizers
from mtop_edge.training.augment import swap_slot_values
from mtop_edge.training.averaging import average_state_dicts, last_checkpoints
from mtop_edge.training.features import Features, WordDropout, WordPieceCollator, encode_examples
from mtop_edge.training.models import TARGET_MARGIN, build_model
from mtop_edge.training.recipe import ModelKind, Pointing, Recipe

CHECKPOINTS = "checkpoints"  # inside the output directory: the Trainer's checkpoints, the resume point


@dataclass
class Prepared:
    """Everything the Trainer is handed, built before it starts."""

    spec: PointerSpec
    train: Features
    eval: Features
    eval_rows: int
    augmented: int
    tokenizer: object | None  # the Hugging Face tokenizer a T5 checkpoint saves beside itself
    vocab_size: int
    encoder_dir: Path | None


def _rank() -> int:
    return int(os.environ.get("RANK", "0"))


def prepare_output(out: Path, *, resume: bool, overwrite: bool) -> None:
    """Refuse to mix runs: a non-empty DIR needs --resume (continue) or --overwrite (start over)."""
    if _rank() != 0:
        return
    if resume:
        if not any((out / CHECKPOINTS).glob("checkpoint-*")):
            raise MtopEdgeError(f"{out}: no checkpoint to resume from (looked in {out / CHECKPOINTS})")
        return
    if out.exists() and any(out.iterdir()):
        if not overwrite:
            raise MtopEdgeError(f"{out} is not empty: pass --resume to continue it or --overwrite to start over")
        shutil.rmtree(out)
    out.mkdir(parents=True, exist_ok=True)


def _select_device(recipe: Recipe) -> str:
    import torch

    if recipe.device == "cuda" and not torch.cuda.is_available():
        raise DeviceError("--device cuda: torch sees no CUDA device (torch.cuda.is_available() is False)")
    if recipe.device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    return recipe.device


def split_rows(recipe: Recipe, data: Path, eval_data: Path | None) -> tuple[list[Example], list[Example]]:
    """Training and eval examples: ``eval_data``, or a fixed, seeded slice held out of ``data``."""
    train_examples = read_examples(data)
    if eval_data is not None:
        eval_examples = read_examples(eval_data)
    else:
        shuffled = list(train_examples)
        random.Random(recipe.seed).shuffle(shuffled)
        holdout = min(recipe.eval_holdout, len(shuffled) // 5)
        eval_examples, train_examples = shuffled[:holdout], shuffled[holdout:]
        if not eval_examples:
            raise DataError("too few rows to hold out an eval set; pass --eval-data", data)
    if recipe.eval_limit:
        eval_examples = eval_examples[: recipe.eval_limit]
    return train_examples, eval_examples


def prepare(recipe: Recipe, out: Path, train_examples: list[Example], eval_examples: list[Example]) -> Prepared:
    """Tokenizer, target vocabulary, spec and encoded rows (the spec is written to ``out`` on rank 0)."""
    augmented = swap_slot_values(train_examples, recipe.augment_copies, recipe.seed)
    rows = [*train_examples, *augmented]
    vocab = TargetVocab.from_examples(rows, min_pointers=recipe.min_pointers)
    encoder_dir = None
    if recipe.kind is ModelKind.ENCODER_POINTER:
        from transformers import BertConfig

        from mtop_edge.training.encoders import resolve_encoder

        encoder_dir = resolve_encoder(recipe.encoder)
        tokenizer_path = tokenizers.copy_encoder_tokenizer(encoder_dir, out)
        positions = BertConfig.from_pretrained(str(encoder_dir)).max_position_embeddings
        provisional = tokenizers.encoder_pointer_spec(recipe, tokenizer_path, vocab, 0, positions)
        encoder = tokenizers.encoder_pointer_source(provisional, tokenizer_path)
        tokenizer, vocab_size = None, provisional.pointer_ids[-1] + 1
    else:
        tokenizer, sp_path = tokenizers.t5_tokenizer(recipe, out, train_examples)
        provisional = tokenizers.t5_spec(recipe, tokenizer, vocab, max_target_tokens=0)
        encoder = tokenizers.t5_source(provisional, sp_path)
        vocab_size = len(tokenizer)
    train_features = encode_examples(rows, provisional, encoder)
    if not train_features.rows:
        raise DataError(f"no trainable rows ({len(train_features.skipped)} skipped)")
    longest = max(len(r["labels"]) for r in train_features.rows)
    spec = dataclasses.replace(provisional, max_target_tokens=longest + TARGET_MARGIN)
    eval_features = encode_examples(eval_examples, spec, encoder)
    if _rank() == 0:
        spec.save(out)
    return Prepared(
        spec, train_features, eval_features, len(eval_examples), len(augmented), tokenizer, vocab_size, encoder_dir
    )


def training_arguments(recipe: Recipe, out: Path, device: str):
    import torch
    from transformers import Seq2SeqTrainingArguments

    select_em = recipe.select_by == "exact_match"
    return Seq2SeqTrainingArguments(
        output_dir=str(out / CHECKPOINTS),
        per_device_train_batch_size=recipe.per_device_batch_size,
        per_device_eval_batch_size=max(recipe.per_device_batch_size, 64),
        gradient_accumulation_steps=recipe.gradient_accumulation_steps,
        learning_rate=recipe.learning_rate,
        weight_decay=recipe.weight_decay,
        optim="adamw_torch",
        lr_scheduler_type=recipe.lr_scheduler,
        warmup_ratio=recipe.warmup_ratio,
        max_steps=recipe.max_steps,
        num_train_epochs=recipe.epochs,
        # models that point smooth their own loss over the columns a row can emit (modeling/pointing.py)
        label_smoothing_factor=0.0 if recipe.pointing in (Pointing.HEAD, Pointing.MASKED) else recipe.label_smoothing,
        seed=recipe.seed,
        bf16=device == "cuda" and torch.cuda.is_bf16_supported(),
        use_cpu=device == "cpu",
        ddp_backend="gloo" if device == "cpu" and int(os.environ.get("WORLD_SIZE", "1")) > 1 else None,
        eval_strategy="steps",
        eval_steps=recipe.eval_steps,
        save_strategy="steps",
        save_steps=recipe.eval_steps,
        save_total_limit=max(recipe.save_total_limit, recipe.average_last + 1),  # + 1: the best is kept too
        load_best_model_at_end=True,
        metric_for_best_model="eval_exact_match" if select_em else "eval_loss",
        greater_is_better=select_em,
        logging_steps=recipe.logging_steps,
        group_by_length=recipe.group_by_length,
        report_to=[],
        dataloader_num_workers=0,
        disable_tqdm=False,
    )


def make_trainer(recipe: Recipe, out: Path, args, prepared: Prepared, extra_callbacks: Sequence = ()):
    """The Trainer with this recipe's model, collators, loss and optimizer settings."""
    from transformers import DataCollatorForSeq2Seq
    from transformers.trainer_callback import PrinterCallback, ProgressCallback

    from mtop_edge.training.trainer import LineProgress, PointerTrainer, RankRecord, TimeLimit

    spec = prepared.spec
    model = build_model(recipe, prepared.vocab_size, spec, prepared.encoder_dir)
    if recipe.kind is ModelKind.ENCODER_POINTER:
        collator = WordPieceCollator(spec)
    else:
        collator = DataCollatorForSeq2Seq(
            prepared.tokenizer, model=model, label_pad_token_id=-100, pad_to_multiple_of=8
        )
    limits = [TimeLimit(recipe.max_minutes)] if recipe.max_minutes > 0 else []
    trainer = PointerTrainer(
        model=model,
        args=args,
        train_dataset=prepared.train.rows,
        eval_dataset=prepared.eval.rows,
        data_collator=collator,
        processing_class=prepared.tokenizer,
        callbacks=[RankRecord(out / CHECKPOINTS), *limits, *extra_callbacks],
    )
    if recipe.word_dropout > 0:
        trainer.train_collator = WordDropout(collator, spec, recipe.word_dropout, recipe.seed + _rank())
    if recipe.pointing is Pointing.MASKED:
        trainer.absent_pointers = (spec.pointer_ids[0], len(spec.pointer_ids), recipe.label_smoothing)
    if recipe.kind is ModelKind.ENCODER_POINTER:
        trainer.rates = (recipe.encoder_learning_rate, recipe.layer_decay)
    trainer.setup_exact_match(spec, prepared.eval.examples, prepared.eval.sources, total=prepared.eval_rows)
    trainer.remove_callback(PrinterCallback)
    trainer.remove_callback(ProgressCallback)
    trainer.add_callback(LineProgress(out / "train_log.jsonl"))
    return trainer


def train(
    recipe: Recipe,
    data: Path,
    out: Path,
    *,
    eval_data: Path | None = None,
    resume: bool = False,
    overwrite: bool = False,
    extra_callbacks: Sequence = (),
) -> dict:
    """Train per the recipe and write the best checkpoint into ``out``; returns a summary."""
    require("torch", "train")
    require("transformers", "train")
    from transformers import set_seed
    from transformers.trainer_utils import get_last_checkpoint

    recipe.validate()
    started = time.time()
    out = Path(out)
    prepare_output(out, resume=resume, overwrite=overwrite)
    device = _select_device(recipe)
    set_seed(recipe.seed)
    train_examples, eval_examples = split_rows(recipe, data, eval_data)
    args = training_arguments(recipe, out, device)
    with args.main_process_first(desc="tokenizer and targets"):  # rank 0 writes the tokenizer and spec first
        prepared = prepare(recipe, out, train_examples, eval_examples)
    for line in prepared.train.skipped[:5] + prepared.eval.skipped[:5]:
        print(f"skipped {line}")
    trainer = make_trainer(recipe, out, args, prepared, extra_callbacks)
    model = trainer.model
    n_params = sum(p.numel() for p in model.parameters())
    if trainer.is_world_process_zero():
        print(
            f"training {recipe.name} ({recipe.kind.value}): {n_params / 1e6:.1f}M parameters, "
            f"{len(prepared.train.rows)} rows ({prepared.augmented} augmented, {len(prepared.train.skipped)} skipped), "
            f"{prepared.eval_rows} eval rows ({len(prepared.eval.skipped)} not encodable, counted as misses), "
            f"device {device}{' bf16' if trainer.args.bf16 else ''}, world size {trainer.args.world_size}"
        )
    checkpoint = get_last_checkpoint(str(out / CHECKPOINTS)) if resume else None
    result = trainer.train(resume_from_checkpoint=checkpoint)
    averaged = []
    if recipe.average_last:
        averaged = last_checkpoints(out / CHECKPOINTS, recipe.average_last)
        _, unexpected = trainer.model.load_state_dict(average_state_dicts(averaged), strict=False)
        if unexpected:
            raise MtopEdgeError(f"averaged checkpoints hold weights the model lacks: {', '.join(unexpected[:3])}")
    final = trainer.evaluate()
    summary = {
        "recipe": recipe.name,
        "kind": recipe.kind.value,
        "parameters": n_params,
        "train_rows": len(prepared.train.rows),
        "augmented_rows": prepared.augmented,
        "skipped_rows": len(prepared.train.skipped),
        "eval_rows": prepared.eval_rows,
        "eval_rows_skipped": len(prepared.eval.skipped),
        "global_step": result.global_step,
        "train_loss": result.training_loss,
        "best_checkpoint": trainer.state.best_model_checkpoint,
        "averaged_checkpoints": [path.name for path in averaged],
        "eval": {k.removeprefix("eval_"): v for k, v in final.items()},
        "device": device,
        "world_size": trainer.args.world_size,
        "minutes": round((time.time() - started) / 60, 2),
    }
    if trainer.is_world_process_zero():
        _save(trainer, prepared, recipe, out, summary)
    return summary


def _save(trainer, prepared: Prepared, recipe: Recipe, out: Path, summary: dict) -> None:
    trainer.save_model(str(out))
    if prepared.tokenizer is not None:
        prepared.tokenizer.save_pretrained(str(out))
    (out / "recipe.toml").write_text(recipe.to_toml())
    # the source pieces seen in training, for `mtop-edge export --trim-input`
    seen = sorted({i for row in prepared.train.rows for i in row["input_ids"]})
    (out / "source_vocab.json").write_text(json.dumps(seen) + "\n")
    (out / "training_summary.json").write_text(json.dumps(summary, indent=1) + "\n")
