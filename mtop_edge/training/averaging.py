"""Checkpoint averaging: the mean of the last few checkpoints' weights, a cheap guard against overfitting.

Averaging the parameters of checkpoints taken late in one run (Vaswani et al. 2017, "Attention Is
All You Need", averaged the last 5-20) smooths the noise of the last updates the way an ensemble
would, at no cost when decoding. Recipe field ``average_last``.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path

from mtop_edge.errors import MtopEdgeError

STEP = re.compile(r"^checkpoint-(\d+)$")


def last_checkpoints(directory: Path, count: int) -> list[Path]:
    """The ``count`` checkpoint directories with the highest step numbers, oldest first.

    Raises:
        MtopEdgeError: fewer than ``count`` checkpoints in ``directory``.
    """
    found = sorted(
        (int(match[1]), path)
        for path in directory.glob("checkpoint-*")
        if (match := STEP.match(path.name)) and path.is_dir()
    )
    if len(found) < count:
        raise MtopEdgeError(f"{directory}: {len(found)} checkpoint(s), cannot average the last {count}")
    return [path for _, path in found[-count:]]


def average_state_dicts(paths: Sequence[Path]) -> dict:
    """Element-wise mean of the floating-point tensors of the checkpoints (others from the last one)."""
    import torch
    from safetensors.torch import load_file

    total: dict[str, torch.Tensor] = {}
    last: dict[str, torch.Tensor] = {}
    for path in paths:
        last = load_file(str(path / "model.safetensors"))
        for name, tensor in last.items():
            if tensor.is_floating_point():
                total[name] = total.get(name, 0) + tensor.double()
    return {name: (total[name] / len(paths)).to(t.dtype) if name in total else t for name, t in last.items()}
