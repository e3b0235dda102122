"""The encoder call: one run for the batch, or on the CPU length-sorted groups of rows put back together.

The encoder's cost follows its tokens, so it should not compute on the padding of the batch's
longest row, while a decoder step reads its weights once per call, so the decoder wants the whole
batch. Wide models therefore encode in groups of rows of similar length, each padded only to its
own longest row and holding at most a budget of padded tokens (onnxruntime's int8 matmuls run
fastest on a few dozen rows: benchmarks/README.md, "The encoder in token-budget groups"); outputs
are zero-padded back to the batch's length (the attention mask hides them). For a step that
attends in row groups (`runtime/row_groups.py`) the cross keys/values go straight into the row
groups instead, each padded to its own longest row.
"""

from __future__ import annotations

from collections.abc import Collection

import numpy as np
import onnxruntime as ort

from mtop_edge.layout import ATTENTION_MASK, INPUT_IDS, PRESENT, group_name
from mtop_edge.runtime.binding import Binding, from_numpy
from mtop_edge.runtime.row_groups import RowGroups

TOKEN_INPUTS = (INPUT_IDS, ATTENTION_MASK)  # inputs with a token axis (1); the others are per row (word_index)


def _length_axis(output: str) -> int | None:
    """The token axis of an encoder output: the states' axis 1, the cross keys/values' axis 2, else none."""
    if output == "last_hidden_state":
        return 1
    return 2 if output.startswith(PRESENT + ".") else None


def token_groups(lengths: np.ndarray, budget: int) -> list[np.ndarray]:
    """Row indices in length order, cut into runs whose padded size (rows x longest) fits ``budget``."""
    order = np.argsort(lengths, kind="stable").tolist()
    groups, start = [], 0
    for end in range(1, len(order) + 1):
        if end == len(order) or (end + 1 - start) * int(lengths[order[end]]) > budget:
            groups.append(np.asarray(order[start:end]))
            start = end
    return groups


class Encoder:
    """Runs the encoder graph on a feed (`core.source.encoder_feed`) and names its outputs."""

    def __init__(self, session: ort.InferenceSession, device: str, group_tokens: int | None = None) -> None:
        """``group_tokens``: on the CPU, encode in groups of at most this many padded tokens (a longer
        row goes alone); None: one call for the batch."""
        self.session, self.device = session, device
        self.group_tokens = group_tokens if device == "cpu" else None
        self.inputs = [i.name for i in session.get_inputs()]
        self.outputs = [o.name for o in session.get_outputs()]

    def _run(self, feed: dict[str, np.ndarray]) -> list:
        binding = Binding(self.session, self.device)
        for name in self.inputs:
            binding.array(name, feed[name])
        binding.device_outputs(self.outputs)
        return binding.run()

    def __call__(
        self, feed: dict[str, np.ndarray], groups: RowGroups | None = None, grouped: Collection[str] = ()
    ) -> tuple[dict, list[np.ndarray]]:
        """{output name: OrtValue} for the batch, and the host arrays under them (to keep alive), if any.

        With ``groups`` (a batch sorted by length, for a step with row groups), each output named in
        ``grouped`` comes back once per group, ``name.group{k}``, copied from the encoder's outputs
        straight into the group's rows and width: the batch's padded grid of it is never built.
        """
        mask = feed[ATTENTION_MASK]
        one_call = self.group_tokens is None or mask.size <= self.group_tokens
        if one_call and groups is None:
            return dict(zip(self.outputs, self._run(feed), strict=True)), []
        lengths = mask.sum(axis=1)
        values: dict = {}
        full: dict[str, np.ndarray] = {}  # outputs put back together at the batch's size
        parts: dict[str, list[np.ndarray]] = {}  # outputs cut into the row groups
        calls = [np.arange(len(lengths))] if one_call else token_groups(lengths, self.group_tokens)
        for rows in calls:
            width = mask.shape[1] if one_call else int(lengths[rows[-1]])
            part = feed if one_call else {k: v[rows, :width] if k in TOKEN_INPUTS else v[rows] for k, v in feed.items()}
            for name, value in zip(self.outputs, self._run(part), strict=True):
                axis = _length_axis(name)
                if groups is not None and name in grouped and axis is not None:
                    piece = value.numpy()
                    groups.place(parts.setdefault(name, groups.zeros(piece, axis)), piece, rows, axis)
                elif one_call:
                    values[name] = value
                else:
                    piece = value.numpy()
                    if name not in full:  # zeros at the batch's size: batch rows, its longest row on the token axis
                        full[name] = np.zeros(self._batch_shape(name, piece.shape, mask.shape), piece.dtype)
                    if axis is None:
                        full[name][rows] = piece
                    else:
                        full[name][(rows, *[slice(None)] * (axis - 1), slice(0, width))] = piece
        values.update((name, from_numpy(whole)) for name, whole in full.items())
        for name, arrays in parts.items():
            values.update((group_name(name, k), from_numpy(array)) for k, array in enumerate(arrays))
        return values, [*full.values(), *(array for arrays in parts.values() for array in arrays)]

    @staticmethod
    def _batch_shape(name: str, part: tuple[int, ...], batch: tuple[int, int]) -> tuple[int, ...]:
        """An encoder output's shape for the whole (rows, tokens) batch, from one group's ``part`` shape."""
        shape = [batch[0], *part[1:]]
        if (axis := _length_axis(name)) is not None:
            shape[axis] = batch[1]
        return tuple(shape)
