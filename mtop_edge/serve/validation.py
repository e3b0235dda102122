"""What a client may send to ``POST /v1/parse``, checked before anything is queued.

Every problem is an ``ApiError`` with an HTTP status and a short machine-readable code; the service
turns it into a JSON error, never a 500.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

from mtop_edge.core.source import EMPTY_UTTERANCE


class ApiError(Exception):
    """A client error: ``status`` (4xx, or 503), ``code`` and a one-line message."""

    def __init__(self, status: int, code: str, message: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status, self.code, self.message, self.headers = status, code, message, headers or {}

    def to_json(self) -> dict:
        return {"error": {"status": self.status, "code": self.code, "message": self.message}}


@dataclass(frozen=True)
class ParseRequest:
    """``utterances`` to parse; ``single`` when the client sent one ``utterance`` (answered as one object)."""

    utterances: list[str]
    single: bool
    truncate: bool


def read_parse_request(body: bytes, *, max_items: int) -> ParseRequest:
    """Decode and check a request body.

    Raises:
        ApiError: 400 for undecodable bytes or JSON, 422 for the wrong shape or empty utterances.
    """
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ApiError(400, "invalid_utf8", f"request body is not UTF-8 (byte {exc.start})") from None
    try:
        payload = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ApiError(400, "invalid_json", f"request body is not JSON ({exc.msg} at character {exc.pos})") from None
    if not isinstance(payload, dict):
        raise ApiError(422, "invalid_request", 'expected a JSON object: {"utterance": "..."} or {"utterances": [...]}')
    unknown = sorted(set(payload) - {"utterance", "utterances", "truncate"})
    if unknown:
        raise ApiError(422, "invalid_request", f"unknown field(s): {', '.join(unknown)}")
    truncate = payload.get("truncate", False)
    if not isinstance(truncate, bool):
        raise ApiError(422, "invalid_request", "truncate must be true or false")
    if ("utterance" in payload) == ("utterances" in payload):
        raise ApiError(422, "invalid_request", 'give exactly one of "utterance" (a string) or "utterances" (a list)')
    if "utterance" in payload:
        utterance = payload["utterance"]
        if not isinstance(utterance, str):
            raise ApiError(422, "invalid_request", f"utterance must be a string, got {type(utterance).__name__}")
        if not utterance.strip():
            raise ApiError(422, "empty_utterance", EMPTY_UTTERANCE)
        _check_unicode(utterance, "utterance")
        return ParseRequest([utterance], True, truncate)
    utterances = payload["utterances"]
    if not isinstance(utterances, list) or not utterances:
        raise ApiError(422, "invalid_request", "utterances must be a non-empty list of strings")
    if len(utterances) > max_items:
        raise ApiError(422, "too_many_items", f"{len(utterances)} utterances in one request (limit {max_items})")
    for index, item in enumerate(utterances):
        if not isinstance(item, str):
            raise ApiError(422, "invalid_request", f"utterances[{index}] must be a string, got {type(item).__name__}")
        _check_unicode(item, f"utterances[{index}]")
    return ParseRequest(utterances, False, truncate)


def _check_unicode(text: str, where: str) -> None:
    """JSON can spell a lone surrogate (\\ud800), which is no character: refuse it before the tokenizer does."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as exc:
        message = f"{where} is not valid Unicode (a lone surrogate at {exc.start})"
        raise ApiError(422, "invalid_utterance", message) from None
