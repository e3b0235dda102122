"""The hot path: batched greedy decoding over plain onnxruntime sessions with past key/values.

One loop for every model kind and layout. The encoder runs once; the first decoder call (the
layout's first-step graph) and every later step are fed by name (``layout.feeding_output``) from
what the encoder and earlier calls returned, with an empty past where nothing returned one. What a
step reads unchanged (cross-attention keys/values, pointer inputs, the attention mask) is bound once.
On CUDA the encoder outputs and both caches stay on the device between steps, and on both devices
the logits land in one preallocated host buffer. On the CPU, rows that are done leave the batch
once half of it is (`DROP_AT`); on CUDA they keep their slot, fed PAD. With the grammar a row is
done when its tree closes (the EOS that must follow needs no step), and the loop ends when every
tree is closed. An export with a small-batch step (a twin of the step graph: 4-bit weights, or no
row groups) runs it for calls of a few rows (`GraphPlan.calls`); where the encoder hands over
float16 cross keys/values (export option ``cross_kv_dtype``) and that graph reads them in float32,
they are widened once per call. A step graph with row groups (export option
``cross_attention_groups``) gets the batch sorted by length, and the cross keys/values and mask
cut into its groups (`runtime/row_groups.py`); the rows come back in input order. Everything else
about the loop is the same.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from mtop_edge.errors import ModelError
from mtop_edge.layout import (
    ATTENTION_MASK,
    ENCODER,
    ENCODER_ATTENTION_MASK,
    INPUT_IDS,
    LOGITS,
    PAST,
    PRESENT,
    SELF,
    grouped_input,
)
from mtop_edge.layout import feeding_output as fed_by
from mtop_edge.manifest import Manifest
from mtop_edge.runtime.binding import Binding, from_numpy
from mtop_edge.runtime.confidence import chosen_logprobs
from mtop_edge.runtime.encoding import Encoder
from mtop_edge.runtime.grammar import ConstrainedBatch, Grammar
from mtop_edge.runtime.row_groups import GroupedGraphs, RowGroups, in_input_order, one_grid_plan, ungrouped
from mtop_edge.runtime.sessions import SessionFactory

# rows leave the batch once this share of it is done: each drop copies every per-row input (see
# `_drop_done`); measured in benchmarks/README.md ("Rows that are done leave the batch")
DROP_AT = 0.5


@dataclass
class Decoded:
    """Exported decoder ids per row (EOS and later excluded), whether each row reached EOS, and each
    step's log-probability (`runtime/confidence.py`): one per id, then the EOS step's where it ended."""

    ids: list[list[int]]
    ended: list[bool]
    logprobs: list[list[float]]


def _rows(out: np.ndarray, logprobs: np.ndarray, last: int, eos_id: int, forced: bool) -> Decoded:
    """Per row: the ids up to EOS, whether it came, and the steps' log-probabilities (EOS's included)."""
    ids, ended, scores = [], [], []
    for row, row_scores in zip(out[:, :last].tolist(), logprobs[:, :last].tolist(), strict=True):
        end = row.index(eos_id) if eos_id in row and not forced else None
        ids.append(row if end is None else row[:end])
        ended.append(forced or end is not None)
        scores.append(row_scores if end is None else row_scores[: end + 1])
    return Decoded(ids, ended, scores)


def _io_names(session) -> tuple[set[str], set[str]]:
    return {ungrouped(i.name) for i in session.get_inputs()}, {o.name for o in session.get_outputs()}


def _unsorted(decoded: Decoded, order: np.ndarray) -> Decoded:
    """``decoded`` of the rows taken in ``order``, back in input order."""
    return Decoded(*(in_input_order(part, order) for part in (decoded.ids, decoded.ended, decoded.logprobs)))


def _bind(binding: Binding, name: str, value) -> None:
    if isinstance(value, np.ndarray):
        binding.array(name, value)
    else:
        binding.value(name, value)


class GreedyDecoder:
    """Sessions for one exported model and the greedy loop over them."""

    def __init__(self, manifest: Manifest, sessions: SessionFactory, *, encoder_tokens: int | None = None) -> None:
        """``encoder_tokens``: on the CPU, encode in groups of at most this many padded tokens (runtime/encoding.py).
        The manifest's ``calibration.temperature`` scales the logits the confidences are read from."""
        plan = manifest.plan
        if sessions.device != "cpu" and manifest.row_groups > 1:  # groups are cut on the host: one grid there
            plan = one_grid_plan(plan, manifest.directory)
        loaded = {name: sessions.create(manifest.directory / name) for name in plan.files}
        self.device = sessions.device
        self.drop_done = self.device == "cpu"  # on CUDA rows keep their slot: a gather there is not written yet
        self.encoder = Encoder(loaded[ENCODER], self.device, encoder_tokens)
        self.plan, self.sessions = plan, loaded
        self.first, self.step = loaded[plan.first.file], loaded[plan.step.file]
        self.first_switches = {name: np.array([flag]) for name, flag in plan.first.switches}
        self.step_switches = {name: np.array([flag]) for name, flag in plan.step.switches}
        arch = manifest.architecture
        self.arch = arch
        self.vocab_size = arch.decoder_vocab
        self.temperature = float(manifest.raw.get("calibration", {}).get("temperature", 1.0))
        self.self_past = arch.past_names(PAST, SELF)
        self.self_present = arch.past_names(PRESENT, SELF)
        self._check_graphs(manifest)
        # per graph: the float16 encoder outputs it reads as float32 (widened once per call, not per step)
        halves = {o.name for o in self.encoder.session.get_outputs() if o.type == "tensor(float16)"}
        self.widen = {
            file: [
                fed_by(i.name) for i in session.get_inputs() if i.type == "tensor(float)" and fed_by(i.name) in halves
            ]
            for file, session in loaded.items()
            if file != ENCODER
        }
        if self.device != "cpu" and any(self.widen.values()):
            raise ModelError(
                f"{manifest.directory}: its float16 cross keys/values are widened for a float32 graph on the CPU "
                "only; export with cross_kv_dtype = float32 to run it on CUDA"
            )
        self.grouped = GroupedGraphs.of({file: s for file, s in loaded.items() if file != ENCODER})
        if self.device != "cpu" and self.grouped.outputs:
            raise ModelError(
                f"{manifest.directory}: its row groups are cut on the host, for the CPU; export with "
                "cross_attention_groups = 1 (or share_weights, for a step without groups) to run it on CUDA"
            )
        per_step = {INPUT_IDS, *self.self_past, *self.step_switches}
        # per step graph: what every step reads unchanged (until rows leave the batch), fed once per batch
        self.constants = {
            file: [i.name for i in loaded[file].get_inputs() if i.name not in per_step]
            for file in {plan.step.file, *(twin.file for _, twin in plan.twins)}
        }
        self.step_outputs = [o.name for o in self.step.get_outputs() if o.name != LOGITS]
        # a step's outputs come back in bind order: the logits, then step_outputs
        self.self_index = [1 + self.step_outputs.index(name) for name in self.self_present]
        spec = manifest.spec
        if manifest.decoder_ids is None:  # untrimmed: exported ids are the checkpoint's
            self.start_id, self.eos_id, self.pad_id = spec.decoder_start_id, spec.eos_id, spec.pad_id
            # a constrained step looks only at the target columns (the grammar's ids index into them)
            self.columns = np.asarray(spec.decoder_vocabulary(), dtype=np.int64)
        else:
            exported = {original: i for i, original in enumerate(manifest.decoder_ids)}
            self.start_id, self.eos_id, self.pad_id = (
                exported[spec.decoder_start_id],
                exported[spec.eos_id],
                exported[spec.pad_id],
            )
            self.columns = None

    def _check_graphs(self, manifest: Manifest) -> None:
        """Every graph input is fed and the sizes match the manifest, before the first parse.

        Raises:
            ModelError: naming the graph file and what does not match.
        """
        arch, plan = self.arch, self.plan
        available = {*self.encoder.outputs, ENCODER_ATTENTION_MASK}
        feed = set(manifest.encoder_inputs)
        graphs = [(ENCODER, self.encoder.session, set(), set(), feed)]
        first_outputs = [o.name for o in self.first.get_outputs()]
        for call, session, switches in (
            (plan.first, self.first, self.first_switches),
            (plan.step, self.step, self.step_switches),
        ):
            required_in = {INPUT_IDS, *switches, *(self.self_past if call is plan.step else ())}
            fed = {*available, *(first_outputs if call is plan.step else ())}
            graphs.append((call.file, session, required_in, {LOGITS, *self.self_present}, fed))
        for name, session, required_in, required_out, fed in graphs:
            have_in = [i.name for i in session.get_inputs()]
            have_out = {o.name: o.shape for o in session.get_outputs()}
            missing = sorted((required_in - set(have_in)) | (required_out - set(have_out)))
            if name == ENCODER:
                missing += sorted(set(have_in) - fed)
            else:
                missing += sorted(
                    i
                    for i in have_in
                    if i not in required_in and fed_by(ungrouped(i)) not in fed and not i.startswith(PAST)
                )
            if missing:
                raise ModelError(
                    f"{manifest.directory / name}: does not match the manifest ({arch.num_decoder_layers} decoder "
                    f"layers): lacks {', '.join(missing[:4])}{' ...' if len(missing) > 4 else ''}"
                )
            width = have_out.get(LOGITS, [None])[-1]
            if isinstance(width, int) and width != arch.decoder_vocab:
                raise ModelError(
                    f"{manifest.directory / name}: logits have {width} columns but the manifest's "
                    f"decoder_vocab is {arch.decoder_vocab}"
                )

        for _, twin in plan.twins:
            if _io_names(self.sessions[twin.file]) != _io_names(self.step):
                # a small-batch step must be the step graph with other weights or without row groups
                raise ModelError(
                    f"{manifest.directory / twin.file}: its inputs or outputs differ from {plan.step.file}'s"
                )

    def _first_call(self, first, available: dict, tokens: np.ndarray, logits: np.ndarray) -> dict:
        """The layout's first decoder step (session ``first``): its outputs by name (logits land in ``logits``)."""
        binding = Binding(first, self.device)
        empty = np.zeros((tokens.shape[0], self.arch.num_heads, 0, self.arch.d_kv), dtype=np.float32)
        for name in binding.inputs:
            if name == INPUT_IDS:
                binding.array(name, tokens)
            elif name in self.first_switches:
                binding.array(name, self.first_switches[name])
            elif (source := fed_by(name)) in available:
                _bind(binding, name, available[source])
            else:  # a past nothing has returned yet
                binding.array(name, empty)
        binding.host_output(LOGITS, logits)
        binding.device_outputs(o for o in binding.outputs if o != LOGITS)
        return dict(zip(binding.order, binding.run(), strict=True))

    def _drop_done(
        self,
        step: Binding,
        keep: np.ndarray,
        constant: dict,
        self_kv: list,
        logits: np.ndarray,
        groups: RowGroups | None,
    ):
        """Rebinds ``step`` to the ``keep`` rows only (CPU): every per-row input, and the logits into ``logits``.

        A batch's longest output sets its number of steps, and most rows end well before it (eval
        rows in sorted slices: benchmarks/README.md, "Rows that are done leave the batch"): a step now costs what
        the rows still decoded cost. ``constant`` is updated in place (a row group's inputs keep the
        group's rows: ``groups``); returns the self-attention past as OrtValues and the host arrays
        under them, which must outlive the next step.
        """
        group_keep = groups.leave(keep) if groups is not None else []
        for name, value in constant.items():
            rows = keep if (grouped := grouped_input(name)) is None else group_keep[grouped[1]]
            kept = (value if isinstance(value, np.ndarray) else value.numpy())[rows]  # .numpy(): a view
            constant[name] = kept  # holds the memory under the binding
            step.array(name, kept)
        step.host_output(LOGITS, logits)
        held = [value.numpy()[keep] for value in self_kv]
        return [from_numpy(array) for array in held], held

    def decode(
        self,
        feed: dict[str, np.ndarray],
        *,
        max_steps: int,
        grammar: Grammar | None = None,
        n_words: Sequence[int] = (),
        forced_steps: int | None = None,
    ) -> Decoded:
        """Greedy-decode a padded batch (``feed``: `core.source.encoder_feed`).

        ``grammar`` constrains every step (``n_words`` bounds each row's pointers);
        ``forced_steps`` ignores EOS and runs exactly that many steps (benchmarks on random weights).
        """
        batch = feed[INPUT_IDS].shape[0]
        steps = forced_steps or max_steps
        logits = np.empty((batch, 1, self.vocab_size), dtype=np.float32)
        tokens = np.full((batch, 1), self.start_id, dtype=np.int64)
        out = np.full((batch, steps), self.pad_id, dtype=np.int64)
        out_logprobs = np.zeros((batch, steps), dtype=np.float32)  # forced steps (EOS after a closed tree): 0
        chosen = np.empty(batch, dtype=np.int64)
        chosen_logprob = np.empty(batch, dtype=np.float32)
        scratch = None if grammar is not None else np.empty((batch, self.vocab_size), dtype=np.float32)

        first_call, step_call = self.plan.calls(batch)  # a twin step for a few rows, where the export has one
        order, groups = None, None
        if count := self.grouped.counts[step_call.file]:  # a group is a run of rows: sort them by length
            lengths = feed[ATTENTION_MASK].sum(axis=1)
            order = np.argsort(lengths, kind="stable")
            feed = {name: value[order] for name, value in feed.items()}
            n_words = [n_words[i] for i in order.tolist()] if len(n_words) else n_words
            groups = RowGroups(lengths[order], count)
        encoded, _arrays = self.encoder(feed, groups, self.grouped.outputs)  # _arrays: the memory under encoded
        if widen := self.widen[step_call.file]:
            wide = {name: encoded[name].numpy().astype(np.float32) for name in widen}
            encoded.update((name, from_numpy(array)) for name, array in wide.items())
            _arrays = [*_arrays, *wide.values()]
        available = {**encoded, ENCODER_ATTENTION_MASK: feed[ATTENTION_MASK]}
        if groups is not None:
            available.update(groups.mask(feed[ATTENTION_MASK]))
        available.update(self._first_call(self.sessions[first_call.file], available, tokens, logits))
        self_kv = [available[name] for name in self.self_present]
        step = Binding(self.sessions[step_call.file], self.device)
        constant = {name: available[fed_by(name)] for name in self.constants[step_call.file]}
        for name, value in constant.items():
            _bind(step, name, value)
        for name, flag in self.step_switches.items():
            step.array(name, flag)
        step.host_output(LOGITS, logits)

        constrained = ConstrainedBatch(grammar, n_words, self.columns) if grammar is not None else None
        finished = constrained.finished if constrained is not None else np.zeros(batch, dtype=bool)
        drop = self.drop_done and forced_steps is None  # forced steps keep every row
        rows = np.arange(batch)  # the batch row of each row still decoded
        live = batch
        last = steps
        for t in range(steps):
            picked, logprob = chosen[:live], chosen_logprob[:live]
            if constrained is not None:
                constrained.pick(logits[:live, 0, :], steps - t, picked, logprob, self.temperature)
            else:
                np.argmax(logits[:live, 0, :], axis=1, out=picked)
                np.copyto(scratch[:live], logits[:live, 0, :])
                chosen_logprobs(scratch[:live], picked, logprob, self.temperature)
                if forced_steps is None:
                    picked[finished] = self.pad_id
                    logprob[finished] = 0.0
                    finished |= picked == self.eos_id
            out[rows, t] = picked
            out_logprobs[rows, t] = logprob
            if t + 1 == steps or (forced_steps is None and finished.all()):
                last = t + 1
                break
            if constrained is not None and forced_steps is None and constrained.complete:
                out[rows, t + 1] = self.eos_id  # every tree is closed: EOS is all the grammar allows, no step needed
                last = t + 2
                break
            done = finished if constrained is None else constrained.root_closed  # a closed tree's EOS needs no step
            if drop and (n_done := int(done.sum())) and n_done >= live * DROP_AT:
                if constrained is not None:
                    out[rows[done & ~finished], t + 1] = self.eos_id
                keep = ~done
                rows, picked, live = rows[keep], picked[keep], live - n_done
                if constrained is not None:
                    constrained.keep(keep)
                    finished = constrained.finished
                else:
                    finished = finished[keep]
                self_kv, _held = self._drop_done(step, keep, constant, self_kv, logits[:live], groups)
            tokens[:live, 0] = picked
            step.array(INPUT_IDS, tokens[:live])  # bound again: CUDA copies an input when it is bound
            for name, value in zip(self.self_past, self_kv, strict=True):
                step.value(name, value)
            step.device_outputs(self.step_outputs)  # rebinding replaces last step's (one longer) present values
            outputs = step.run()
            self_kv = [outputs[i] for i in self.self_index]

        decoded = _rows(out, out_logprobs, last, self.eos_id, forced_steps is not None)
        return decoded if order is None else _unsorted(decoded, order)
