"""Fine-tuning with Hugging Face's Seq2SeqTrainer (heavy dependencies; imported by `mtop-edge train`).

One process or many: launched with ``torchrun`` / ``accelerate launch`` the Trainer runs DDP with
no change here. The output directory is a Hugging Face checkpoint (``from_pretrained`` loads it)
plus ``spiece.model``, ``pointer.json`` and the resolved ``recipe.toml``; ``checkpoints/`` inside
it is the resume point.
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from mtop_edge.core.forms import CLOSE, INTENT_PREFIX, SLOT_PREFIX, same_parse
from mtop_edge.core.pointer import split_words
from mtop_edge.core.source import SourceEncoder, load_sentencepiece, marked_text
from mtop_edge.core.spec import SP_MODEL_FILE, PointerSpec
from mtop_edge.core.vocab import TargetVocab
from mtop_edge.data import Example, read_examples
from mtop_edge.datacheck import pointer_round_trip
from mtop_edge.errors import DataError, DeviceError, MtopEdgeError, require
from mtop_edge.training.augment import swap_slot_values
from mtop_edge.training.averaging import average_state_dicts, last_checkpoints
from mtop_edge.training.recipe import SCRATCH, Recipe

CHECKPOINTS = "checkpoints"
TARGET_MARGIN = 16  # decoding room beyond the longest training target


@dataclass
class Features:
    """Encoded rows ready for the collator, and the rows that could not be encoded."""

    rows: list[dict]
    examples: list[Example]
    skipped: list[str]
    words: list[list] = dataclasses.field(default_factory=list)

    @property
    def em_rows(self) -> list[tuple[Example, list, list[int]]]:
        """(example, words, source ids) per encoded row, for exact-match decoding."""
        return [(e, w, r["input_ids"]) for e, w, r in zip(self.examples, self.words, self.rows, strict=True)]


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


def train_sentencepiece(texts: Sequence[str], path: Path, vocab_size: int) -> None:
    """A unigram model with T5's special ids (pad 0, eos 1, unk 2, no bos)."""
    import io

    import sentencepiece as spm

    buffer = io.BytesIO()
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(texts),
        model_writer=buffer,
        vocab_size=vocab_size,
        model_type="unigram",
        character_coverage=1.0,
        pad_id=0,
        eos_id=1,
        unk_id=2,
        bos_id=-1,
        hard_vocab_limit=False,
        num_threads=1,
        minloglevel=2,
    )
    path.write_bytes(buffer.getvalue())


def build_tokenizer(recipe: Recipe, out: Path, examples: Sequence[Example]):
    """The Hugging Face tokenizer (for savers and peers) and the sentencepiece file behind it."""
    from transformers import AutoTokenizer, T5TokenizerFast

    sp_path = out / SP_MODEL_FILE
    if recipe.init == SCRATCH:
        if not sp_path.exists():
            texts = [marked_text(split_words(e.utterance)) if recipe.markers else e.utterance for e in examples]
            train_sentencepiece(texts, sp_path, recipe.sp_vocab_size)
        return T5TokenizerFast(vocab_file=str(sp_path), extra_ids=0), sp_path
    tokenizer = AutoTokenizer.from_pretrained(recipe.init)
    vocab_file = getattr(tokenizer, "vocab_file", None)
    if not vocab_file or not Path(vocab_file).is_file():
        raise MtopEdgeError(f"{recipe.init}: the tokenizer has no sentencepiece model (spiece.model)")
    if not sp_path.exists():
        shutil.copyfile(vocab_file, sp_path)
    return tokenizer, sp_path


def build_spec(recipe: Recipe, tokenizer, vocab: TargetVocab, max_target_tokens: int) -> PointerSpec:
    """Add the target symbols to the tokenizer and record their ids."""
    tokenizer.add_tokens(vocab.symbols)
    ids = tokenizer.convert_tokens_to_ids(vocab.symbols)
    return PointerSpec(
        vocab=vocab,
        symbol_ids=tuple(ids),
        pad_id=tokenizer.pad_token_id,
        eos_id=tokenizer.eos_token_id,
        unk_id=tokenizer.unk_token_id,
        decoder_start_id=tokenizer.pad_token_id,
        markers=recipe.markers,
        max_source_tokens=recipe.max_source_tokens,
        max_target_tokens=max_target_tokens,
    )


def encode_examples(examples: Sequence[Example], spec: PointerSpec, encoder: SourceEncoder) -> Features:
    """Source and target ids per row; rows that cannot be aligned or encoded are listed, not dropped silently."""
    rows, kept, skipped, kept_words = [], [], [], []
    for example in examples:
        tokens, reason = pointer_round_trip(example)
        try:
            if tokens is None:
                raise MtopEdgeError(reason)
            source = encoder.prepare(example.utterance)
            target = spec.target_ids(tokens)
        except (MtopEdgeError, KeyError) as exc:
            skipped.append(f"{example.path}:{example.line}: {exc}")
            continue
        rows.append({"input_ids": source.ids, "attention_mask": [1] * len(source.ids), "labels": target})
        kept.append(example)
        kept_words.append(source.words)
    return Features(rows, kept, skipped, kept_words)


def build_model(recipe: Recipe, vocab_size: int, spec: PointerSpec):
    from transformers import AutoModelForSeq2SeqLM, MT5Config, MT5ForConditionalGeneration

    if recipe.span_loss > 0 and not recipe.pointer_head:
        raise MtopEdgeError("span_loss tags the pointer head's word states: it needs pointer_head = true")
    if recipe.init == SCRATCH:
        config = MT5Config(
            vocab_size=vocab_size,
            d_model=recipe.d_model,
            d_ff=recipe.d_ff,
            num_layers=recipe.num_layers,
            num_decoder_layers=recipe.num_decoder_layers,
            num_heads=recipe.num_heads,
            d_kv=recipe.d_kv,
            feed_forward_proj=recipe.feed_forward_proj,
            tie_word_embeddings=recipe.tie_word_embeddings,
            dropout_rate=recipe.dropout_rate,
            pad_token_id=spec.pad_id,
            eos_token_id=spec.eos_id,
            decoder_start_token_id=spec.decoder_start_id,
        )
        if recipe.pointer_head:
            model = _pointer_head_model(config, spec, recipe)
        else:
            model = MT5ForConditionalGeneration(config)
    elif recipe.pointer_head:
        model = _continued_pointer_model(recipe, spec, vocab_size)
    else:
        model = AutoModelForSeq2SeqLM.from_pretrained(recipe.init)
        if model.get_input_embeddings().num_embeddings < vocab_size:
            model.resize_token_embeddings(vocab_size)
        model.config.dropout_rate = recipe.dropout_rate
    generation = model.generation_config
    generation.decoder_start_token_id = spec.decoder_start_id
    generation.eos_token_id = spec.eos_id
    generation.pad_token_id = spec.pad_id
    generation.max_length = spec.max_target_tokens + 1
    generation.num_beams = 1
    generation.do_sample = False
    return model


def _pointer_head_model(config, spec: PointerSpec, recipe: Recipe):
    from mtop_edge.modeling.pointer_head import PointerHeadT5

    pointers = spec.pointer_ids
    if not recipe.markers:
        raise MtopEdgeError("pointer_head = true needs markers = true: words are pointed at through their markers")
    if list(pointers) != list(range(pointers[0], pointers[0] + len(pointers))):
        raise MtopEdgeError("pointer_head: the pointer tokens' ids are not consecutive")
    config.pointer_head = True
    config.pointer_label_smoothing = recipe.label_smoothing  # the model smooths its own loss (see its docstring)
    config.pointer_start = pointers[0]
    config.num_pointers = len(pointers)
    if recipe.span_loss > 0:
        symbols = dict(zip(spec.symbols, spec.symbol_ids, strict=True))
        config.span_loss = recipe.span_loss
        config.span_slot_ids = [i for symbol, i in symbols.items() if symbol.startswith("[" + SLOT_PREFIX)]
        config.span_intent_ids = [i for symbol, i in symbols.items() if symbol.startswith("[" + INTENT_PREFIX)]
        config.span_close_id = symbols[CLOSE]
    return PointerHeadT5(config)


def _continued_pointer_model(recipe: Recipe, spec: PointerSpec, vocab_size: int):
    """A pointer-head checkpoint of this project, to train on (a warm restart with a new schedule).

    Raises:
        MtopEdgeError: ``init`` is not a pointer-head checkpoint, or does not fit this data's symbols.
    """
    from mtop_edge.modeling.pointer_head import PointerHeadT5
    from mtop_edge.torch_engine import is_pointer_head_checkpoint

    if not is_pointer_head_checkpoint(Path(recipe.init)):
        raise MtopEdgeError(
            f'pointer_head = true needs init = "scratch" or a pointer-head checkpoint of this project; {recipe.init} '
            "has no pointer head"
        )
    model = PointerHeadT5.from_pretrained(recipe.init, dropout_rate=recipe.dropout_rate)
    config = model.config
    pointers = spec.pointer_ids
    if (config.pointer_start, config.num_pointers) != (pointers[0], len(pointers)) or config.vocab_size < vocab_size:
        raise MtopEdgeError(f"{recipe.init}: its pointer tokens or vocabulary do not match this data's symbols")
    if recipe.span_loss > 0 and not hasattr(model, "pointer_span_tags"):
        raise MtopEdgeError(f"{recipe.init}: trained without the span loss, it has no span head to go on with")
    config.pointer_label_smoothing = recipe.label_smoothing
    config.span_loss = recipe.span_loss
    return model


def _select_device(recipe: Recipe) -> str:
    import torch

    if recipe.device == "cuda" and not torch.cuda.is_available():
        raise DeviceError("--device cuda: torch sees no CUDA device (torch.cuda.is_available() is False)")
    if recipe.device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    return recipe.device


def exact_match(
    model,
    spec: PointerSpec,
    rows: Sequence[tuple[Example, list, list[int]]],
    *,
    device,
    batch_size: int,
    rank: int = 0,
    world_size: int = 1,
) -> tuple[int, int]:
    """(exact matches, well-formed outputs) of greedy decoding on this process's share of the rows."""
    from mtop_edge.torch_engine import greedy_generate

    mine = list(rows)[rank::world_size]
    hits = well_formed = 0
    for i in range(0, len(mine), batch_size):
        batch = mine[i : i + batch_size]
        for ids, (example, words, _) in zip(
            greedy_generate(model, [r[2] for r in batch], spec, device=device), batch, strict=True
        ):
            tree = spec.try_decode(ids[1:], example.utterance, words)  # generate's rows start with the decoder start
            well_formed += tree is not None
            hits += same_parse(tree, example.tree)
    return hits, well_formed


def _callbacks(out: Path, log_path: Path):
    from transformers import TrainerCallback
    from transformers.trainer_callback import ProgressCallback

    class LineProgress(ProgressCallback):
        """The progress bar, with one compact line per log event instead of a dict dump."""

        def on_log(self, args, state, control, logs=None, **kwargs):
            if not state.is_world_process_zero or not logs:
                return
            step = f"step {state.global_step}/{state.max_steps}"
            if "loss" in logs:
                line = f"{step} | loss {logs['loss']:.4f} | lr {logs.get('learning_rate', 0):.2e}"
            elif "eval_loss" in logs:
                line = f"{step} | eval_loss {logs['eval_loss']:.4f}"
                if "eval_exact_match" in logs:
                    line += f" | eval EM {logs['eval_exact_match']:.4f} | well-formed {logs['eval_well_formed']:.3f}"
            else:
                return
            with log_path.open("a") as handle:
                handle.write(json.dumps({"step": state.global_step, **logs}) + "\n")
            (self.training_bar.write if self.training_bar is not None else print)(line)

    class RankRecord(TrainerCallback):
        """Each process records what it trained on, so a multi-process run can be checked."""

        def on_train_begin(self, args, state, control, model=None, **kwargs):
            self.forwards = 0
            self.first_batch: list[int] | None = None

            def hook(module, inputs, kwargs_in):
                if module.training:
                    self.forwards += 1
                    if self.first_batch is None and kwargs_in.get("input_ids") is not None:
                        self.first_batch = kwargs_in["input_ids"][0, :8].tolist()

            model.register_forward_pre_hook(hook, with_kwargs=True)

        def on_train_end(self, args, state, control, **kwargs):
            record = {
                "rank": args.process_index,
                "world_size": args.world_size,
                "global_step": state.global_step,
                "forwards": self.forwards,
                "first_batch_ids": self.first_batch,
            }
            (out / CHECKPOINTS / f"rank-{args.process_index}.json").write_text(json.dumps(record) + "\n")

    return LineProgress, RankRecord()


class WordDropout:
    """A collator wrapper: each source word's pieces (between markers) read as <unk> with probability
    ``rate``, drawn afresh per batch, so the model cannot lean on any one word (markers stay: pointers
    still address every word)."""

    def __init__(self, collator, spec: PointerSpec, rate: float, seed: int) -> None:
        import torch

        self.collator, self.rate, self.unk = collator, rate, spec.unk_id
        self.markers = torch.tensor(spec.pointer_ids)
        self.keep = torch.tensor([spec.pad_id, spec.eos_id, *spec.pointer_ids])
        self.generator = torch.Generator().manual_seed(seed)

    def __call__(self, rows):
        import torch

        batch = self.collator(rows)
        ids = batch["input_ids"]
        word = torch.isin(ids, self.markers).cumsum(1)  # word number of each position (marker included)
        dropped = torch.rand(ids.shape[0], int(word.max()) + 1, generator=self.generator) < self.rate
        hit = dropped.gather(1, word) & (word > 0) & ~torch.isin(ids, self.keep)
        batch["input_ids"] = ids.masked_fill(hit, self.unk)
        return batch


def time_limit(minutes: float):
    """A callback that stops training after ``minutes``; the Trainer then evaluates, saves and
    loads the best checkpoint (transformers is imported lazily, hence a factory)."""
    from transformers import TrainerCallback

    class TimeLimit(TrainerCallback):
        def on_train_begin(self, args, state, control, **kwargs):
            self.deadline = time.time() + minutes * 60

        def on_step_end(self, args, state, control, **kwargs):
            if time.time() > self.deadline:
                control.should_training_stop = control.should_evaluate = control.should_save = True
                print(f"time limit ({minutes} min) reached at step {state.global_step}")
            return control

    return TimeLimit()


def _trainer_class():
    import torch
    from torch.utils.data import SequentialSampler
    from transformers import Seq2SeqTrainer

    class PointerTrainer(Seq2SeqTrainer):
        """Evaluation adds exact match and well-formed rate from greedy decoding.

        Each process decodes its own share of the eval rows and the counts are summed, so the
        figures are exact under any number of processes (rows that could not be encoded, e.g.
        with labels unseen in training, count as misses).
        """

        def _get_eval_sampler(self, eval_dataset):
            # group_by_length would shuffle eval batches too, and the eval loss (a mean of batch
            # means) would then change from one evaluation of the same weights to the next
            return SequentialSampler(eval_dataset) if self.args.world_size <= 1 else None

        train_collator = None  # word dropout: training batches only, never eval batches
        absent_pointers: tuple[int, int, float] | None = None  # (first pointer id, count, smoothing)

        def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
            """With ``mask_absent_pointers``: the loss sees no probability on pointers past the row's
            words (decoding never emits them: the grammar masks them too)."""
            if self.absent_pointers is None or not model.training:
                return super().compute_loss(model, inputs, return_outputs, num_items_in_batch)
            from mtop_edge.modeling.pointer_head import absent_pointer_bias, masked_loss

            start, count, smoothing = self.absent_pointers
            labels = inputs["labels"]
            outputs = model(**{k: v for k, v in inputs.items() if k != "labels"})
            bias = absent_pointer_bias(inputs["input_ids"], start, count).unsqueeze(1)
            logits = outputs.logits
            pointers = logits[..., start : start + count] + bias.to(logits.dtype)
            logits = torch.cat([logits[..., :start], pointers, logits[..., start + count :]], dim=-1)
            loss = masked_loss(logits, labels, smoothing)
            return (loss, outputs) if return_outputs else loss

        def get_train_dataloader(self):
            if self.train_collator is None:
                return super().get_train_dataloader()
            plain, self.data_collator = self.data_collator, self.train_collator
            try:
                return super().get_train_dataloader()
            finally:
                self.data_collator = plain

        def setup_exact_match(self, spec: PointerSpec, rows: list, total: int) -> None:
            self.pointer_spec, self.em_rows, self.em_total = spec, rows, total

        def evaluation_loop(
            self,
            dataloader,
            description,
            prediction_loss_only=None,
            ignore_keys=None,
            metric_key_prefix="eval",
        ):
            output = super().evaluation_loop(
                dataloader,
                description,
                prediction_loss_only=True,
                ignore_keys=ignore_keys,
                metric_key_prefix=metric_key_prefix,
            )
            model = self.accelerator.unwrap_model(self.model).eval()
            with self.autocast_smart_context_manager():
                counts = exact_match(
                    model,
                    self.pointer_spec,
                    self.em_rows,
                    device=self.args.device,
                    batch_size=self.args.per_device_eval_batch_size,
                    rank=self.args.process_index,
                    world_size=self.args.world_size,
                )
            totals = torch.tensor(counts, dtype=torch.float64, device=self.args.device)
            if self.args.world_size > 1:
                torch.distributed.all_reduce(totals)
            total = max(self.em_total, 1)
            output.metrics[f"{metric_key_prefix}_exact_match"] = totals[0].item() / total
            output.metrics[f"{metric_key_prefix}_well_formed"] = totals[1].item() / total
            return output

    return PointerTrainer


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
    import torch
    from transformers import DataCollatorForSeq2Seq, Seq2SeqTrainingArguments, set_seed
    from transformers.trainer_callback import PrinterCallback, ProgressCallback
    from transformers.trainer_utils import get_last_checkpoint

    started = time.time()
    out = Path(out)
    prepare_output(out, resume=resume, overwrite=overwrite)
    device = _select_device(recipe)
    set_seed(recipe.seed)

    train_examples = read_examples(data)
    if eval_data is not None:
        eval_examples = read_examples(eval_data)
    else:  # hold out a fixed, seeded slice of the training rows
        import random

        shuffled = list(train_examples)
        random.Random(recipe.seed).shuffle(shuffled)
        holdout = min(recipe.eval_holdout, len(shuffled) // 5)
        eval_examples, train_examples = shuffled[:holdout], shuffled[holdout:]
        if not eval_examples:
            raise DataError("too few rows to hold out an eval set; pass --eval-data", data)
    if recipe.eval_limit:
        eval_examples = eval_examples[: recipe.eval_limit]
    augmented = swap_slot_values(train_examples, recipe.augment_copies, recipe.seed)

    use_bf16 = device == "cuda" and torch.cuda.is_bf16_supported()
    select_em = recipe.select_by == "exact_match"
    args = Seq2SeqTrainingArguments(
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
        label_smoothing_factor=0.0 if recipe.pointer_head or recipe.mask_absent_pointers else recipe.label_smoothing,
        seed=recipe.seed,
        bf16=use_bf16,
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
        group_by_length=True,
        report_to=[],
        dataloader_num_workers=0,
        disable_tqdm=False,
    )

    with args.main_process_first(desc="tokenizer and targets"):
        tokenizer, sp_path = build_tokenizer(recipe, out, train_examples)
        vocab = TargetVocab.from_examples([*train_examples, *augmented], min_pointers=recipe.min_pointers)
        provisional = build_spec(recipe, tokenizer, vocab, max_target_tokens=0)
        encoder = SourceEncoder(load_sentencepiece(sp_path), provisional)
        train_features = encode_examples([*train_examples, *augmented], provisional, encoder)
        longest = max((len(r["labels"]) for r in train_features.rows), default=1)
        spec = dataclasses.replace(provisional, max_target_tokens=longest + TARGET_MARGIN)
        eval_features = encode_examples(eval_examples, spec, encoder)
        if _rank() == 0:
            spec.save(out)
    if not train_features.rows:
        raise DataError(f"no trainable rows ({len(train_features.skipped)} skipped)", data)
    for line in train_features.skipped[:5] + eval_features.skipped[:5]:
        print(f"skipped {line}")

    model = build_model(recipe, len(tokenizer), spec)
    progress, rank_record = _callbacks(out, out / "train_log.jsonl")
    collator = DataCollatorForSeq2Seq(tokenizer, model=model, label_pad_token_id=-100, pad_to_multiple_of=8)
    if recipe.word_dropout > 0:
        if not spec.markers:
            raise MtopEdgeError("word_dropout needs markers = true (words are found between markers)")
        train_collator = WordDropout(collator, spec, recipe.word_dropout, recipe.seed + _rank())
    else:
        train_collator = None
    limits = [time_limit(recipe.max_minutes)] if recipe.max_minutes > 0 else []
    trainer = _trainer_class()(
        model=model,
        args=args,
        train_dataset=train_features.rows,
        eval_dataset=eval_features.rows,
        data_collator=collator,
        processing_class=tokenizer,
        callbacks=[rank_record, *limits, *extra_callbacks],
    )
    trainer.train_collator = train_collator
    if recipe.mask_absent_pointers:
        if recipe.pointer_head or not spec.markers:
            raise MtopEdgeError("mask_absent_pointers is for @ptrN models with markers (the pointer head masks itself)")
        trainer.absent_pointers = (spec.pointer_ids[0], len(spec.pointer_ids), recipe.label_smoothing)
    trainer.setup_exact_match(spec, eval_features.em_rows, total=len(eval_examples))
    trainer.remove_callback(PrinterCallback)
    trainer.remove_callback(ProgressCallback)
    trainer.add_callback(progress)
    n_params = sum(p.numel() for p in model.parameters())
    if trainer.is_world_process_zero():
        print(
            f"training {recipe.name}: {n_params / 1e6:.1f}M parameters, {len(train_features.rows)} rows "
            f"({len(augmented)} augmented, {len(train_features.skipped)} skipped), "
            f"{len(eval_examples)} eval rows ({len(eval_features.skipped)} not encodable, counted as misses), "
            f"device {device}{' bf16' if use_bf16 else ''}, "
            f"world size {args.world_size}"
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
        "parameters": n_params,
        "train_rows": len(train_features.rows),
        "augmented_rows": len(augmented),
        "skipped_rows": len(train_features.skipped),
        "eval_rows": len(eval_examples),
        "eval_rows_skipped": len(eval_features.skipped),
        "global_step": result.global_step,
        "train_loss": result.training_loss,
        "best_checkpoint": trainer.state.best_model_checkpoint,
        "averaged_checkpoints": [path.name for path in averaged],
        "eval": {k.removeprefix("eval_"): v for k, v in final.items()},
        "device": device,
        "world_size": args.world_size,
        "minutes": round((time.time() - started) / 60, 2),
    }
    if trainer.is_world_process_zero():
        trainer.save_model(str(out))
        tokenizer.save_pretrained(str(out))
        (out / "recipe.toml").write_text(recipe.to_toml())
        # the source pieces seen in training, for `mtop-edge export --trim-input`
        seen = sorted({i for row in train_features.rows for i in row["input_ids"]})
        (out / "source_vocab.json").write_text(json.dumps(seen) + "\n")
        (out / "training_summary.json").write_text(json.dumps(summary, indent=1) + "\n")
    return summary
