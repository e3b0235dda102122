"""The Hugging Face Trainer as this project runs it: exact match at every evaluation, learning
rates per parameter group, a time limit, and one log line per event.

Imports torch and transformers: only `mtop-edge train` (``training/train.py``) imports this module.
"""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from pathlib import Path

import torch
from torch.utils.data import SequentialSampler
from transformers import Seq2SeqTrainer, TrainerCallback
from transformers.trainer_callback import ProgressCallback

from mtop_edge.core.source import Source, encoder_feed
from mtop_edge.core.spec import PointerSpec
from mtop_edge.data import Example
from mtop_edge.metrics import id_exact_matches


def exact_match(
    model,
    spec: PointerSpec,
    examples: Sequence[Example],
    sources: Sequence[Source],
    *,
    device,
    batch_size: int,
    rank: int = 0,
    world_size: int = 1,
) -> tuple[int, int]:
    """(exact matches, well-formed outputs) of greedy decoding on this process's share of the rows."""
    from mtop_edge.modeling.torch_engine import greedy_generate

    mine = list(range(len(sources)))[rank::world_size]
    hits = well_formed = 0
    for i in range(0, len(mine), batch_size):
        batch = [sources[j] for j in mine[i : i + batch_size]]
        feed = encoder_feed([s.ids for s in batch], spec, [s.word_starts for s in batch])
        outputs = [ids[1:] for ids in greedy_generate(model, feed, spec, device=device)]  # after the decoder start
        counts = id_exact_matches(spec, outputs, [examples[j].tree for j in mine[i : i + batch_size]], batch)
        hits, well_formed = hits + counts[0], well_formed + counts[1]
    return hits, well_formed


class LineProgress(ProgressCallback):
    """The progress bar, with one compact line per log event (also appended to ``log_path``)."""

    def __init__(self, log_path: Path) -> None:
        super().__init__()
        self.log_path = log_path

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
        with self.log_path.open("a") as handle:
            handle.write(json.dumps({"step": state.global_step, "time": round(time.time(), 1), **logs}) + "\n")
        (self.training_bar.write if self.training_bar is not None else print)(line)


class RankRecord(TrainerCallback):
    """Each process records what it trained on (``rank-N.json`` in ``directory``), so a multi-process
    run can be checked."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory

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
        (self.directory / f"rank-{args.process_index}.json").write_text(json.dumps(record) + "\n")


class TimeLimit(TrainerCallback):
    """Stops training after ``minutes``; the Trainer then evaluates, saves and loads the best checkpoint."""

    def __init__(self, minutes: float) -> None:
        self.minutes = minutes

    def on_train_begin(self, args, state, control, **kwargs):
        self.deadline = time.time() + self.minutes * 60

    def on_step_end(self, args, state, control, **kwargs):
        if time.time() > self.deadline:
            control.should_training_stop = control.should_evaluate = control.should_save = True
            print(f"time limit ({self.minutes} min) reached at step {state.global_step}")
        return control


class PointerTrainer(Seq2SeqTrainer):
    """Evaluation adds exact match and well-formed rate from greedy decoding.

    Each process decodes its own share of the eval rows and the counts are summed, so the
    figures are exact under any number of processes (rows that could not be encoded, e.g.
    with labels unseen in training, count as misses).
    """

    train_collator = None  # word dropout: training batches only, never eval batches
    absent_pointers: tuple[int, int, float] | None = None  # (first pointer id, count, smoothing)
    rates: tuple[float, float] | None = None  # (encoder rate, layer decay) for models with optimizer_groups

    def _get_eval_sampler(self, eval_dataset):
        # group_by_length would shuffle eval batches too, and the eval loss (a mean of batch
        # means) would then change from one evaluation of the same weights to the next
        return SequentialSampler(eval_dataset) if self.args.world_size <= 1 else None

    def create_optimizer(self):
        """AdamW over the model's own parameter groups where it has them (encoder-pointer: the
        pretrained encoder learns at its own rate, layer by layer)."""
        groups = getattr(self.model, "optimizer_groups", None)
        if self.optimizer is None and groups is not None and self.rates is not None:
            args = self.args
            encoder_rate, decay = self.rates
            self.optimizer = torch.optim.AdamW(
                groups(args.learning_rate, encoder_rate or args.learning_rate, decay, args.weight_decay),
                betas=(args.adam_beta1, args.adam_beta2),
                eps=args.adam_epsilon,
            )
        return super().create_optimizer()

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        """With ``pointing = masked``: the loss sees no probability on pointers past the row's
        words (decoding never emits them: the grammar masks them too)."""
        if self.absent_pointers is None or not model.training:
            return super().compute_loss(model, inputs, return_outputs, num_items_in_batch)
        from mtop_edge.modeling.pointer_head import absent_pointer_bias
        from mtop_edge.modeling.pointing import masked_loss

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

    def setup_exact_match(self, spec: PointerSpec, examples: list, sources: list, total: int) -> None:
        self.pointer_spec, self.em_examples, self.em_sources, self.em_total = spec, examples, sources, total

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
                self.em_examples,
                self.em_sources,
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
