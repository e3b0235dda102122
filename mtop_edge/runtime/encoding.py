"""The encoder call: one run for the batch, or on the CPU length-sorted groups of rows put back together.

The encoder's cost follows its tokens, so it should not compute on the padding of the batch's
longest row, while a decoder step reads its weights once per call, so the decoder wants the whole
batch. Wide models therefore encode in groups of rows of similar length, each padded only to its
own longest row; outputs are zero-padded back to the batch's length (the attention mask hides them).
"""

from __future__ import annotations

import numpy as np
import onnxruntime as ort

from mtop_edge.layout import ATTENTION_MASK, INPUT_IDS, PRESENT
from mtop_edge.runtime.binding import Binding, from_numpy

TOKEN_INPUTS = (INPUT_IDS, ATTENTION_MASK)  # inputs with a token axis (1); the others are per row (word_index)


def _length_axis(output: str) -> int | None:
    """The token axis of an encoder output: the states' axis 1, the cross keys/values' axis 2, else none."""
    if output == "last_hidden_state":
        return 1
    return 2 if output.startswith(PRESENT + ".") else None


class Encoder:
    """Runs the encoder graph on a feed (`core.source.encoder_feed`) and names its outputs."""

    def __init__(self, session: ort.InferenceSession, device: str, group_rows: int | None = None) -> None:
        self.session, self.device = session, device
        self.group_rows = group_rows if device == "cpu" else None
        self.inputs = [i.name for i in session.get_inputs()]
        self.outputs = [o.name for o in session.get_outputs()]

    def _run(self, feed: dict[str, np.ndarray]) -> list:
        binding = Binding(self.session, self.device)
        for name in self.inputs:
            binding.array(name, feed[name])
        binding.device_outputs(self.outputs)
        return binding.run()

    def __call__(self, feed: dict[str, np.ndarray]) -> tuple[dict, list[np.ndarray]]:
        """{output name: OrtValue} for the batch, and the host arrays under them (to keep alive), if any."""
        batch = feed[INPUT_IDS].shape[0]
        if self.group_rows is None or batch <= self.group_rows:
            return dict(zip(self.outputs, self._run(feed), strict=True)), []
        mask = feed[ATTENTION_MASK]
        lengths = mask.sum(axis=1)
        order = np.argsort(lengths, kind="stable")
        full: list[np.ndarray] = []
        for start in range(0, batch, self.group_rows):
            rows = order[start : start + self.group_rows]
            width = int(lengths[rows].max())
            part = {k: v[rows, :width] if k in TOKEN_INPUTS else v[rows] for k, v in feed.items()}
            outputs = [v.numpy() for v in self._run(part)]
            if not full:  # zeros at the batch's size: batch rows, and its longest row on the token axis
                full = [np.zeros(self._batch_shape(n, o.shape, mask.shape), o.dtype) for n, o in self._named(outputs)]
            for (name, piece), whole in zip(self._named(outputs), full, strict=True):
                axis = _length_axis(name)
                if axis is None:
                    whole[rows] = piece
                else:
                    whole[(rows, *[slice(None)] * (axis - 1), slice(0, width))] = piece
        return {name: from_numpy(whole) for name, whole in zip(self.outputs, full, strict=True)}, full

    def _named(self, outputs: list[np.ndarray]):
        return zip(self.outputs, outputs, strict=True)

    @staticmethod
    def _batch_shape(name: str, part: tuple[int, ...], batch: tuple[int, int]) -> tuple[int, ...]:
        """An encoder output's shape for the whole (rows, tokens) batch, from one group's ``part`` shape."""
        shape = [batch[0], *part[1:]]
        if (axis := _length_axis(name)) is not None:
            shape[axis] = batch[1]
        return tuple(shape)
