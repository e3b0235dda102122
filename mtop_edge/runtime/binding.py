"""The one place that touches onnxruntime's private C-level IOBinding.

The Python ``IOBinding`` wrapper re-validates devices and graph capture on every call, a third of
a small model's decoder step (benchmarks/README.md, "C-level binding"), so the hot loop binds
through the C objects under it. Everything it needs from them is here, under public names.
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np
import onnxruntime as ort


def device_handle(device: str):
    """The C-level device object onnxruntime binds outputs to (``cpu`` or ``cuda``, device 0)."""
    return ort.OrtDevice.make(device, 0)._get_c_device()


def from_numpy(array: np.ndarray):
    """A C-level OrtValue over ``array``'s memory (no copy: the array must outlive it)."""
    return ort.OrtValue.ortvalue_from_numpy(array)._ortvalue


class Binding:
    """One session's inputs and outputs, bound by name, and its run."""

    def __init__(self, session: ort.InferenceSession, device: str) -> None:
        self._binding = session.io_binding()._iobinding
        self._run = session._sess.run_with_iobinding
        self._device = device_handle(device)
        self._cpu = device_handle("cpu")
        self.inputs = [i.name for i in session.get_inputs()]
        self.outputs = [o.name for o in session.get_outputs()]
        self.order: list[str] = []  # outputs in the order first bound: the order `run` returns them in

    def array(self, name: str, array: np.ndarray) -> None:
        """Bind a host array (CUDA copies it to the device when it is bound)."""
        self._binding.bind_input(name, array)

    def value(self, name: str, value) -> None:
        """Bind an OrtValue that an earlier run returned (it stays where it is)."""
        self._binding.bind_ortvalue_input(name, value)

    def host_output(self, name: str, buffer: np.ndarray) -> None:
        """The output lands in ``buffer`` (preallocated, C-contiguous float32) at every run."""
        if name not in self.order:
            self.order.append(name)
        self._binding.bind_output(name, self._cpu, np.float32, buffer.shape, buffer.ctypes.data)

    def device_outputs(self, names: Iterable[str]) -> None:
        """These outputs are allocated on the device at each run (bound again before every run:
        rebinding replaces the last run's values)."""
        for name in names:
            if name not in self.order:
                self.order.append(name)
            self._binding.bind_output(name, self._device)

    def run(self) -> list:
        """Run; returns the outputs in `order` as C-level OrtValues (``.numpy()`` views them on the CPU)."""
        self._run(self._binding, None)
        outputs = self._binding.get_outputs()
        # by index: iterating the C-level vector (``list(outputs)``) costs ~6x more, ~50 us a step
        return [outputs[i] for i in range(len(outputs))]
