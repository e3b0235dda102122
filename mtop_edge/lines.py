"""Input lines to utterances, and parses to the JSON records that `parse -` and `parse --ray` write.

One rule for both: a line that is not valid UTF-8 (or, in a JSONL file, not ``{"utterance": ...}``)
or whose utterance is empty becomes an error record; every other line is parsed; as many records
come out as lines went in.
"""

from __future__ import annotations

import json

from mtop_edge.core.source import EMPTY_UTTERANCE

Line = tuple[dict, "str | None", "str | None"]  # (where it came from, its text, why it cannot be parsed)


def read_line(raw: bytes, jsonl: bool = False) -> tuple[str | None, str | None]:
    """A line's (utterance, error); the error is None when the utterance is one to parse."""
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        return None, f"invalid UTF-8 at byte {exc.start}"
    if jsonl:
        try:
            value = json.loads(text)
        except json.JSONDecodeError as exc:
            return None, f"not JSON ({exc.msg})"
        text = value.get("utterance") if isinstance(value, dict) else None
        if not isinstance(text, str):
            return None, 'expected {"utterance": "..."}'
    return text, (None if text.strip() else EMPTY_UTTERANCE)


def parse_records(parser, lines: list[Line], truncate: bool) -> list[dict]:
    """One record per line, in order: where it came from plus its parse (as ``parse --json`` prints
    it, with the model's id) or its error. The parsable lines are parsed as one batch."""
    good = [text for _, text, error in lines if error is None]
    results = iter(parser.parse_batch(good, truncate=truncate, strict=False))
    model = parser.manifest.model_id
    return [
        {**where, **next(results).to_json(), "model": model}
        if error is None
        else {**where, "utterance": text, "error": error}
        for where, text, error in lines
    ]
