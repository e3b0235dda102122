"""The row groups of a grouped step graph (export option ``cross_attention_groups``), and their inputs.

A grouped step reads each cross-attention's keys/values and the encoder mask once per group of
rows, each group padded only to its own longest row (`export/row_groups.py`). The decoder sorts a
batch by length first, so every group is a run of consecutive rows: `cut` picks the runs that
leave the least padding, and `RowGroups` holds them: the encoder copies its outputs into them
(`runtime/encoding.py`), and they follow the rows that leave the batch.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from itertools import pairwise
from pathlib import Path

import numpy as np

from mtop_edge.errors import ModelError
from mtop_edge.layout import (
    ENCODER_ATTENTION_MASK,
    UNGROUPED_STEP,
    GraphPlan,
    feeding_output,
    group_name,
    grouped_input,
)


def ungrouped(name: str) -> str:
    """The input that a row group's input ``name`` groups (`layout.grouped_input`), else ``name`` itself."""
    grouped = grouped_input(name)
    return name if grouped is None else grouped[0]


def in_input_order(rows: Sequence, order: np.ndarray) -> list:
    """Per-row values of the rows taken in ``order``, back in input order."""
    where = np.empty_like(order)
    where[order] = np.arange(len(order))
    return [rows[i] for i in where.tolist()]


@dataclass(frozen=True)
class GroupedGraphs:
    """Which decoder graphs of an export take row groups: per graph file how many (0: none), and the
    encoder outputs they read once per group (the cross keys/values)."""

    counts: dict[str, int]
    outputs: frozenset[str]

    @classmethod
    def of(cls, sessions: dict) -> GroupedGraphs:
        """From the decoder graphs' inputs (``sessions``: file -> onnxruntime session)."""
        counts, outputs = {}, set()
        for file, session in sessions.items():
            groups = [grouped for i in session.get_inputs() if (grouped := grouped_input(i.name))]
            counts[file] = 1 + max((k for _, k in groups), default=-1)
            outputs |= {feeding_output(base) for base, _ in groups if base != ENCODER_ATTENTION_MASK}
        return cls(counts, frozenset(outputs))


def one_grid_plan(plan: GraphPlan, directory: Path) -> GraphPlan:
    """``plan`` with the step without row groups for every call its narrower twins do not take: for a
    device where the groups are not cut (CUDA; the cut is host work).

    Raises:
        ModelError: the export has no step without groups (written with ``share_weights`` only).
    """
    one_grid = [twin for _, twin in plan.twins if twin.file == UNGROUPED_STEP]
    if not one_grid:
        raise ModelError(
            f"{directory}: its step attends in row groups, which are cut on the host, for the CPU, and it has no "
            "step without them; export with cross_attention_groups = 1 to run it on CUDA"
        )
    narrower = tuple((rows, twin) for rows, twin in plan.twins if twin.file != UNGROUPED_STEP)
    first = one_grid[0] if plan.first == plan.step else plan.first
    return GraphPlan(first, one_grid[0], narrower)


def cut(lengths: np.ndarray, groups: int) -> list[tuple[int, int]]:
    """``groups`` runs (start, end) of the ascending ``lengths`` that cover them with the fewest padded
    tokens (sum over runs of rows x longest); runs may be empty, where there are fewer lengths than groups.

    Only the places where the length grows can be cut, so the search runs over those (a few dozen).
    """
    n = len(lengths)
    if n == 0:
        return [(0, 0)] * groups
    edges = np.concatenate(([0], np.flatnonzero(np.diff(lengths)) + 1, [n]))  # candidate cuts
    longest = np.asarray(lengths)[edges[1:] - 1]  # the longest row before each candidate cut (from 1)
    # cost[j]: fewest padded tokens covering rows [0, edges[j]) so far; a run [edges[i], edges[j]) costs
    # (edges[j] - edges[i]) x longest[j - 1]; i == j is an empty run
    run = (edges[:, None] - edges[None, :]) * np.concatenate(([0], longest))[:, None]
    run = np.where(np.tri(len(edges), dtype=bool), run, np.iinfo(np.int64).max // 4)
    cost = np.where(np.arange(len(edges)) == 0, 0, np.iinfo(np.int64).max // 4)
    starts = []
    for _ in range(groups):
        total = cost[None, :] + run
        starts.append(total.argmin(axis=1))
        cost = total.min(axis=1)
    bounds, j = [], len(edges) - 1
    for start in reversed(starts):
        i = int(start[j])
        bounds.append((int(edges[i]), int(edges[j])))
        j = i
    return bounds[::-1]


class RowGroups:
    """The groups of one sorted batch: each one's rows (a run) and width (its longest row)."""

    def __init__(self, lengths: np.ndarray, groups: int) -> None:
        """``lengths``: the batch's encoder lengths, ascending."""
        self.bounds = cut(lengths, groups)
        self.widths = [int(lengths[end - 1]) if end > start else 0 for start, end in self.bounds]

    def zeros(self, piece: np.ndarray, axis: int) -> list[np.ndarray]:
        """Zeroed arrays, one per group, shaped as ``piece`` but with the group's rows and its width on ``axis``."""
        arrays = []
        for (start, end), width in zip(self.bounds, self.widths, strict=True):
            shape = [end - start, *piece.shape[1:]]
            shape[axis] = width
            arrays.append(np.zeros(shape, piece.dtype))
        return arrays

    def place(self, arrays: list[np.ndarray], piece: np.ndarray, rows: np.ndarray, axis: int) -> None:
        """Copy ``piece``, the output for batch rows ``rows``, into the groups' ``arrays`` (each cut to its width:
        a row's tokens never go past its group's longest row)."""
        for (start, end), array in zip(self.bounds, arrays, strict=True):
            inside = (rows >= start) & (rows < end)
            if inside.any():
                width = min(array.shape[axis], piece.shape[axis])
                cut_to = (*[slice(None)] * (axis - 1), slice(0, width))
                array[(rows[inside] - start, *cut_to)] = piece[(inside, *cut_to)]

    def mask(self, mask: np.ndarray) -> dict[str, np.ndarray]:
        """The encoder attention mask of each group, keyed as `layout.feeding_output` looks it up."""
        return {
            group_name(ENCODER_ATTENTION_MASK, k): np.ascontiguousarray(mask[start:end, :width])
            for k, ((start, end), width) in enumerate(zip(self.bounds, self.widths, strict=True))
        }

    def leave(self, keep: np.ndarray) -> list[np.ndarray]:
        """Rows leave the batch (``keep`` over the rows still decoded): per group, which of its rows stay."""
        kept = [keep[begin:end] for begin, end in self.bounds]
        ends = np.cumsum([0, *(int(rows.sum()) for rows in kept)]).tolist()
        self.bounds = list(pairwise(ends))
        return kept
