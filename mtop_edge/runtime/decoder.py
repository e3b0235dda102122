"""The hot path: batched greedy decoding over plain onnxruntime sessions with past key/values.

The encoder runs once. The cross-attention keys/values every step reuses come from the encoder
itself (exports with ``encoder_cross_kv``: the with-past decoder then runs every step, the first one
with an empty past) or from a first-step decoder. All tensors move through IOBinding: on CUDA the
encoder output and both caches stay on the device between steps, and on both devices the logits
land in one preallocated host buffer. On the CPU, rows that are done leave the batch once half of
it is (`DROP_AT`); on CUDA they keep their slot, fed PAD. With the grammar a row is done when its
tree closes (the EOS that must follow needs no step), and the loop ends when every tree is closed.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import onnxruntime as ort

from mtop_edge.errors import ModelError
from mtop_edge.manifest import DECODER, DECODER_MERGED, DECODER_WITH_PAST, ENCODER, Manifest
from mtop_edge.runtime.grammar import ConstrainedBatch, Grammar
from mtop_edge.runtime.sessions import create_session

# rows leave the batch once this share of it is done: each drop copies every per-row input (see
# `_drop_done`); 32-row calls in 12-row slices, 1 thread, eval rows: edge-tiny-h200 427 utt/s
# keeping every row, 440 dropping at every step, 468 at a fifth, 481 at half; the shipped model 759 -> 836
DROP_AT = 0.5


@dataclass
class Decoded:
    """Exported decoder ids per row (EOS and later excluded) and whether each row reached EOS."""

    ids: list[list[int]]
    ended: list[bool]


class GreedyDecoder:
    """Sessions for one exported model and the greedy loop over them."""

    def __init__(
        self,
        manifest: Manifest,
        *,
        device: str = "cpu",
        threads: int | None = None,
        optimization: str = "all",
        encoder_rows: int | None = None,
    ) -> None:
        """``encoder_rows``: on the CPU, encode larger batches in groups of this many rows (see `_encode`)."""

        def load(name: str):
            return create_session(manifest.directory / name, device=device, threads=threads, optimization=optimization)

        self.device = device
        # rows that are done leave the batch (see `_drop_done`); on CUDA they stay: a gather there is not written yet
        self.drop_done = device == "cpu"
        self._cpu = ort.OrtDevice.make("cpu", 0)._get_c_device()
        self._device = ort.OrtDevice.make(device, 0)._get_c_device()
        self.merged = manifest.merged
        self.encoder_cross_kv = manifest.encoder_cross_kv and not manifest.merged
        self.encoder = load(ENCODER)
        if self.merged:
            self.first = self.step = load(DECODER_MERGED)
        elif self.encoder_cross_kv:
            self.first, self.step = None, load(DECODER_WITH_PAST)
        else:
            self.first, self.step = load(DECODER), load(DECODER_WITH_PAST)
        arch = manifest.architecture
        self.arch = arch
        self.vocab_size = arch.decoder_vocab
        self.self_present = arch.past_names("present", "decoder")
        self.cross_present = arch.past_names("present", "encoder")
        self.self_past = arch.past_names("past_key_values", "decoder")
        self.cross_past = arch.past_names("past_key_values", "encoder")
        self.pointer_inputs = manifest.pointer_inputs
        self.encoder_outputs = [
            "last_hidden_state",
            *self.pointer_inputs,
            *(self.cross_present if self.encoder_cross_kv else ()),
        ]
        self._length_axis = {"last_hidden_state": 1, **dict.fromkeys(self.cross_present, 2)}
        self.encoder_rows = encoder_rows
        self._check_graphs(manifest)
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
        """The graphs' own inputs, outputs and sizes match the manifest, before the first parse.

        Raises:
            ModelError: naming the graph file and what does not match.
        """
        arch = self.arch
        common = {"input_ids", "encoder_attention_mask", *self.pointer_inputs}
        past = set(self.self_past + self.cross_past)
        expected = [(self.encoder, ENCODER, {"input_ids", "attention_mask"}, set(self.encoder_outputs))]
        if self.first is not None:
            expected.append(
                (
                    self.first,
                    DECODER_MERGED if self.merged else DECODER,
                    common | {"encoder_hidden_states"} | (past | {"use_cache_branch"} if self.merged else set()),
                    {"logits", *self.self_present, *self.cross_present},
                )
            )
        if not self.merged:
            expected.append((self.step, DECODER_WITH_PAST, common | past, {"logits", *self.self_present}))
        for session, name, inputs, outputs in expected:
            have_in = {i.name for i in session.get_inputs()}
            have_out = {o.name: o.shape for o in session.get_outputs()}
            missing = sorted((inputs - have_in) | (outputs - set(have_out)))
            if missing:
                raise ModelError(
                    f"{manifest.directory / name}: does not match the manifest ({arch.num_decoder_layers} decoder "
                    f"layers): lacks {', '.join(missing[:4])}{' ...' if len(missing) > 4 else ''}"
                )
            width = have_out.get("logits", [None])[-1]
            if isinstance(width, int) and width != arch.decoder_vocab:
                raise ModelError(
                    f"{manifest.directory / name}: logits have {width} columns but the manifest's "
                    f"decoder_vocab is {arch.decoder_vocab}"
                )

    def _run_encoder(self, input_ids: np.ndarray, attention_mask: np.ndarray) -> list:
        """The encoder's outputs (``encoder_outputs`` order) as onnxruntime's C OrtValues, on the device."""
        encoder = self.encoder.io_binding()._iobinding
        encoder.bind_input("input_ids", input_ids)
        encoder.bind_input("attention_mask", attention_mask)
        for name in self.encoder_outputs:
            encoder.bind_output(name, self._device)
        self.encoder._sess.run_with_iobinding(encoder, None)
        return list(encoder.get_outputs())

    def _encode(self, input_ids: np.ndarray, attention_mask: np.ndarray) -> tuple[list, list[np.ndarray]]:
        """The encoder's outputs for the batch, and the host arrays under them (to keep alive), if any.

        On the CPU a batch over ``encoder_rows`` is encoded in groups of rows of similar length, each
        padded only to its own longest row, then put back together: the encoder's cost follows its
        tokens, so it should not compute on the padding of the batch's longest row, while a decoder
        step reads its weights once per call, so the decoder wants the whole batch. Padded positions
        hold zeros, which the attention mask hides.
        """
        batch = input_ids.shape[0]
        if self.device != "cpu" or self.encoder_rows is None or batch <= self.encoder_rows:
            return self._run_encoder(input_ids, attention_mask), []
        lengths = attention_mask.sum(axis=1)
        order = np.argsort(lengths, kind="stable")
        full: list[np.ndarray] = []

        def named(outputs: list[np.ndarray]):
            return zip(self.encoder_outputs, outputs, strict=True)

        for start in range(0, batch, self.encoder_rows):
            rows = order[start : start + self.encoder_rows]
            width = int(lengths[rows].max())
            outputs = [v.numpy() for v in self._run_encoder(input_ids[rows, :width], attention_mask[rows, :width])]
            if not full:  # zeros at the batch's size: batch rows, and its longest row on the length axis
                full = [np.zeros(self._batch_shape(n, o.shape, input_ids.shape), o.dtype) for n, o in named(outputs)]
            for (name, part), whole in zip(named(outputs), full, strict=True):
                axis = self._length_axis.get(name)
                if axis is None:
                    whole[rows] = part
                else:
                    whole[(rows, *[slice(None)] * (axis - 1), slice(0, width))] = part
        return [ort.OrtValue.ortvalue_from_numpy(whole)._ortvalue for whole in full], full  # no copy

    def _batch_shape(self, name: str, part: tuple[int, ...], batch: tuple[int, int]) -> tuple[int, ...]:
        """An encoder output's shape for the whole (rows, tokens) batch, from one group's ``part`` shape."""
        shape = [batch[0], *part[1:]]
        if (axis := self._length_axis.get(name)) is not None:
            shape[axis] = batch[1]
        return tuple(shape)

    def _drop_done(
        self, step, keep: np.ndarray, constant: dict, self_kv: list, logits: np.ndarray
    ) -> tuple[list, list[np.ndarray]]:
        """Rebinds ``step`` to the ``keep`` rows only (CPU): every per-row input, and the logits into ``logits``.

        A batch's longest output sets its number of steps, and most rows end well before it (eval
        rows in sorted 12-row slices: 35% of the row-steps fed a finished row): a step now costs what
        the rows still decoded cost. ``constant`` is updated in place; returns the self-attention past
        as OrtValues and the host arrays under them, which must outlive the next step.
        """
        for name, value in constant.items():
            kept = (value if isinstance(value, np.ndarray) else value.numpy())[keep]  # .numpy(): a view
            constant[name] = kept  # holds the memory under the binding
            step.bind_input(name, kept)
        step.bind_output("logits", self._cpu, np.float32, logits.shape, logits.ctypes.data)
        held = [value.numpy()[keep] for value in self_kv]
        return [ort.OrtValue.ortvalue_from_numpy(array)._ortvalue for array in held], held

    def _empty_past(self, batch: int) -> np.ndarray:
        return np.zeros((batch, self.arch.num_heads, 0, self.arch.d_kv), dtype=np.float32)

    def decode(
        self,
        input_ids: np.ndarray,
        attention_mask: np.ndarray,
        *,
        max_steps: int,
        grammar: Grammar | None = None,
        n_words: Sequence[int] = (),
        forced_steps: int | None = None,
    ) -> Decoded:
        """Greedy-decode a padded batch.

        ``grammar`` constrains every step (``n_words`` bounds each row's pointers);
        ``forced_steps`` ignores EOS and runs exactly that many steps (benchmarks on random weights).
        """
        batch = input_ids.shape[0]
        steps = forced_steps or max_steps
        device = self.device
        logits = np.empty((batch, 1, self.vocab_size), dtype=np.float32)
        tokens = np.full((batch, 1), self.start_id, dtype=np.int64)
        out = np.full((batch, steps), self.pad_id, dtype=np.int64)
        chosen = np.empty(batch, dtype=np.int64)

        # All binding goes to the C objects under onnxruntime's Python IOBinding wrapper, which
        # re-validates devices and graph capture on every call (measured on edge-tiny-h200: 64 -> 20 us
        # of Python per decoder step; batch 1 5.3 -> 4.8 ms). The logits stay bound to one host
        # buffer, which every step overwrites.
        cpu, device = self._cpu, self._device
        encoded, _arrays = self._encode(input_ids, attention_mask)  # _arrays: the memory under encoded, if any
        hidden, *rest = encoded
        memory, cross_kv = rest[: len(self.pointer_inputs)], rest[len(self.pointer_inputs) :]
        n_self = len(self.self_present)

        if self.first is not None:
            first = self.first.io_binding()._iobinding
            first.bind_input("input_ids", tokens)
            first.bind_input("encoder_attention_mask", attention_mask)
            first.bind_ortvalue_input("encoder_hidden_states", hidden)
            for name, value in zip(self.pointer_inputs, memory, strict=True):
                first.bind_ortvalue_input(name, value)
            if self.merged:
                empty = self._empty_past(batch)
                for name in self.self_past + self.cross_past:
                    first.bind_input(name, empty)
                first.bind_input("use_cache_branch", np.zeros(1, dtype=bool))
            first.bind_output("logits", cpu, np.float32, logits.shape, logits.ctypes.data)
            for name in self.self_present + self.cross_present:
                first.bind_output(name, device)
            self.first._sess.run_with_iobinding(first, None)
            outputs = list(first.get_outputs())
            self_kv, cross_kv = outputs[1 : 1 + n_self], outputs[1 + n_self :]

        step, run = self.step.io_binding()._iobinding, self.step._sess.run_with_iobinding
        step.bind_input("encoder_attention_mask", attention_mask)
        # the per-row inputs every step reads unchanged (until rows leave the batch)
        constant = dict(zip([*self.cross_past, *self.pointer_inputs], [*cross_kv, *memory], strict=True))
        if self.merged:
            constant["encoder_hidden_states"] = hidden
        for name, value in constant.items():
            step.bind_ortvalue_input(name, value)
        constant["encoder_attention_mask"] = attention_mask
        if self.merged:
            use_cache = np.ones(1, dtype=bool)
            step.bind_input("use_cache_branch", use_cache)
        step.bind_input("input_ids", tokens)
        step.bind_output("logits", cpu, np.float32, logits.shape, logits.ctypes.data)
        per_step = self.self_present + (self.cross_present if self.merged else [])
        if self.first is None:  # the first step: the with-past graph with an empty past
            empty = self._empty_past(batch)
            for name in self.self_past:
                step.bind_input(name, empty)
            for name in per_step:
                step.bind_output(name, device)
            run(step, None)
            outputs = step.get_outputs()
            self_kv = [outputs[i] for i in range(1, 1 + n_self)]

        constrained = ConstrainedBatch(grammar, n_words, self.columns) if grammar is not None else None
        finished = constrained.finished if constrained is not None else np.zeros(batch, dtype=bool)
        drop = self.drop_done and forced_steps is None  # forced steps keep every row
        rows = np.arange(batch)  # the batch row of each row still decoded
        live = batch
        last = steps
        for t in range(steps):
            picked = chosen[:live]
            if constrained is not None:
                constrained.pick(logits[:live, 0, :], steps - t, picked)
            else:
                np.argmax(logits[:live, 0, :], axis=1, out=picked)
                if forced_steps is None:
                    picked[finished] = self.pad_id
                    finished |= picked == self.eos_id
            out[rows, t] = picked
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
                self_kv, _held = self._drop_done(step, keep, constant, self_kv, logits[:live])
            tokens[:live, 0] = picked
            step.bind_input("input_ids", tokens[:live])  # bound again: CUDA copies an input when it is bound
            for name, value in zip(self.self_past, self_kv, strict=True):
                step.bind_ortvalue_input(name, value)
            for name in per_step:  # rebinding replaces last step's (one longer) present values
                step.bind_output(name, device)
            run(step, None)
            outputs = step.get_outputs()
            self_kv = [outputs[i] for i in range(1, 1 + n_self)]

        ids, ended = [], []
        for row in out[:, :last].tolist():
            if self.eos_id in row and forced_steps is None:
                ids.append(row[: row.index(self.eos_id)])
                ended.append(True)
            else:
                ids.append(row)
                ended.append(forced_steps is not None)
        return Decoded(ids, ended)
