"""MTOP readers: the official 8-column TSV and JSON lines ``{"utterance", "logical_form"}``.

The format is told from the content (the first non-blank line), not the file name. Files may lack
a final newline, use CRLF, or start with a BOM. A malformed row is reported with its file and
line; by default it is skipped and counted, under ``strict`` the first one raises.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from mtop_edge.core import forms
from mtop_edge.core.forms import Intent
from mtop_edge.errors import DataError, FormError, InputError

# small MTOP samples shipped in the package (CC BY-SA 4.0), for tests, parity checks and benchmarks
SAMPLES = Path(__file__).resolve().parent / "samples"
TRAIN_SAMPLE = SAMPLES / "train_sample.jsonl"
EVAL_SAMPLE = SAMPLES / "eval_sample.jsonl"

TSV_COLUMNS = ("id", "intent", "slots", "utterance", "domain", "locale", "decoupled_form", "tokens")
FORMATS = ("jsonl", "tsv")


@dataclass(frozen=True)
class Example:
    """One row: the utterance, its gold tree, and where it came from."""

    utterance: str
    tree: Intent
    path: str = ""
    line: int = 0

    @property
    def logical_form(self) -> str:
        return forms.serialize(self.tree)


@dataclass
class Dataset:
    """The rows of one file that parsed, and the malformed ones that were skipped."""

    path: str
    format: str
    examples: list[Example] = field(default_factory=list)
    errors: list[DataError] = field(default_factory=list)

    @property
    def rows(self) -> int:
        """Every non-blank row in the file, malformed ones included."""
        return len(self.examples) + len(self.errors)


def detect_format(first_line: str) -> str | None:
    """'jsonl' or 'tsv' from a file's first non-blank line, or None if it is neither."""
    stripped = first_line.lstrip()
    if stripped.startswith("{"):
        return "jsonl"
    if first_line.count("\t") >= len(TSV_COLUMNS) - 1:
        return "tsv"
    return None


def _lines(path: Path) -> Iterator[tuple[int, bytes]]:
    """(line number, raw line) for each non-blank line; CRLF and a leading BOM are removed."""
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise DataError(f"cannot read: {exc.strerror or exc}", path) from exc
    data = data.removeprefix(b"\xef\xbb\xbf")
    for number, raw in enumerate(data.split(b"\n"), start=1):
        raw = raw.removesuffix(b"\r")
        if raw.strip():
            yield number, raw


def _parse_jsonl(text: str) -> tuple[str, str]:
    try:
        row = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ValueError(f"invalid JSON: {exc.msg} (column {exc.colno})") from None
    if not isinstance(row, dict):
        raise ValueError(f"expected a JSON object, found {type(row).__name__}")
    for key in ("utterance", "logical_form"):
        if key not in row:
            raise ValueError(f"missing key {key!r}")
        if not isinstance(row[key], str):
            raise ValueError(f"{key!r} must be a string, found {type(row[key]).__name__}")
    return row["utterance"], row["logical_form"]


def _parse_tsv(text: str) -> tuple[str, str]:
    columns = text.split("\t")
    if len(columns) != len(TSV_COLUMNS):
        raise ValueError(f"expected {len(TSV_COLUMNS)} tab-separated columns, found {len(columns)}")
    return columns[3], columns[6]


def _check_row(utterance: str, logical_form: str, intent_column: str | None) -> Intent:
    if not utterance.strip():
        raise ValueError("empty utterance")
    try:
        tree = forms.parse(logical_form)
    except FormError as exc:
        raise ValueError(f"bad logical form {exc}") from None
    if intent_column and intent_column != tree.label:
        raise ValueError(f"intent column says {intent_column}, the logical form says {tree.label}")
    return tree


def _parse_row(text: str, fmt: str) -> tuple[str, Intent]:
    if fmt == "jsonl":
        utterance, logical_form = _parse_jsonl(text)
        return utterance, _check_row(utterance, logical_form, None)
    utterance, logical_form = _parse_tsv(text)
    return utterance, _check_row(utterance, logical_form, text.split("\t")[1])


def read_dataset(path: str | Path, *, strict: bool = False) -> Dataset:
    """Read an MTOP file in either format.

    Raises:
        DataError: the file cannot be read or its format cannot be told; under ``strict``, also
            the first malformed row (with file and line).
    """
    path = Path(path)
    if path.is_dir():
        raise DataError("is a directory, expected an MTOP .tsv/.txt or .jsonl file", path)
    fmt: str | None = None
    examples: list[Example] = []
    errors: list[DataError] = []
    for number, raw in _lines(path):
        try:
            text = raw.decode("utf-8")
            row_format = fmt or detect_format(text)
            if row_format is None:  # junk: skipped like any malformed row; the format comes from the next good one
                raise ValueError('neither a JSON line ({"utterance", "logical_form"}) nor an 8-column MTOP TSV row')
            utterance, tree = _parse_row(text, row_format)
            fmt = row_format
        except UnicodeDecodeError as exc:
            error = DataError(f"invalid UTF-8 at byte {exc.start}", path, number)
        except ValueError as exc:
            error = DataError(str(exc), path, number)
        else:
            examples.append(Example(utterance, tree, str(path), number))
            continue
        if strict:
            raise error
        errors.append(error)
    return Dataset(str(path), fmt or "empty", examples, errors)


def first_rows(dataset: Dataset, limit: int | None) -> Dataset:
    """The dataset cut to its first ``limit`` rows as read (well-formed and malformed alike)."""
    if limit is None:
        return dataset
    lines = sorted([e.line for e in dataset.examples] + [e.line or 0 for e in dataset.errors])[:limit]
    last = lines[-1] if lines else 0
    return Dataset(
        dataset.path,
        dataset.format,
        [e for e in dataset.examples if e.line <= last],
        [e for e in dataset.errors if (e.line or 0) <= last],
    )


def read_examples(path: str | Path, *, strict: bool = False) -> list[Example]:
    """The well-formed rows of a file; raises DataError if there are none."""
    dataset = read_dataset(path, strict=strict)
    if not dataset.examples:
        detail = f" ({len(dataset.errors)} malformed, first: {dataset.errors[0]})" if dataset.errors else ""
        raise DataError(f"no usable rows{detail}", path)
    return dataset.examples


def encodable(examples: Sequence[Example], encoder, limit: int | None = None) -> tuple[list[Example], list]:
    """The first ``limit`` examples (all: None) whose utterance the model takes, and their sources
    (``encoder``: a `core.source.SourceEncoder`); refused utterances are left out."""
    kept, sources = [], []
    for example in examples:
        if limit is not None and len(kept) == limit:
            break
        try:
            sources.append(encoder.prepare(example.utterance))
        except InputError:
            continue
        kept.append(example)
    return kept, sources
