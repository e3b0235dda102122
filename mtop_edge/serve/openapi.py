"""The service's OpenAPI 3.1 description, served at ``GET /openapi.json``: every response it sends.

``POST /v1/parse`` is one operation whose 200 body is ``oneOf`` a single result (for
``{"utterance": ...}``) or a batch (for ``{"utterances": [...]}``); every error is the same
``Error`` body; 503s carry ``Retry-After``, 405s ``Allow``, and every response ``X-Request-Id``.
"""

from __future__ import annotations

from mtop_edge import __version__

REF = "#/components/schemas/"
_CONFIDENCE = {"type": "number", "minimum": 0, "maximum": 1}
_SLOT = {
    "type": "object",
    "description": "A slot: text with character offsets into the utterance, or a nested intent.",
    "properties": {
        "label": {"type": "string", "examples": ["SL:DATE_TIME"]},
        "text": {"type": "string"},
        "start": {"type": "integer", "minimum": 0},
        "end": {"type": "integer", "minimum": 0},
        "intent": {"$ref": REF + "Intent"},
        "confidence": {**_CONFIDENCE, "description": "Probability of the slot's label, pointers and closing bracket."},
    },
    "required": ["label"],
}
_INTENT = {
    "type": "object",
    "properties": {
        "intent": {"type": "string"},
        "confidence": {**_CONFIDENCE, "description": "Probability of the step that chose this intent."},
        "slots": {"type": "array", "items": {"$ref": REF + "Slot"}},
    },
    "required": ["intent", "slots"],
}
_RESULT = {
    "type": "object",
    "description": "One utterance's parse, as `mtop-edge parse --json` prints it.",
    "properties": {
        "utterance": {"type": "string"},
        "logical_form": {"type": ["string", "null"], "examples": ["[IN:CREATE_ALARM [SL:DATE_TIME for 7am ] ]"]},
        "intent": {"type": ["string", "null"]},
        "confidence": {
            **_CONFIDENCE,
            "description": "Probability of the decoded sequence, each step renormalised over what the grammar allowed.",
        },
        "intent_confidence": _CONFIDENCE,
        "understood": {
            "type": "boolean",
            "description": "False when there is no tree, or its confidence is under the service's --min-confidence.",
        },
        "slots": {"type": "array", "items": {"$ref": REF + "Slot"}},
        "truncated": {"type": "boolean"},
        "capped": {"type": "boolean"},
        "error": {"type": "string", "description": "Set when this item could not be parsed (list requests)."},
    },
    "required": ["utterance", "logical_form", "intent", "understood", "slots"],
}
_SINGLE = {
    "allOf": [{"$ref": REF + "Result"}],
    "properties": {"model": {"type": "string", "description": "name@hash of the model that answered"}},
    "required": ["model"],
}
_BATCH = {
    "type": "object",
    "properties": {"results": {"type": "array", "items": {"$ref": REF + "Result"}}, "model": {"type": "string"}},
    "required": ["results", "model"],
    "additionalProperties": False,
}
_ERROR = {
    "type": "object",
    "properties": {
        "error": {
            "type": "object",
            "properties": {
                "status": {"type": "integer"},
                "code": {"type": "string", "examples": ["invalid_json", "body_too_large", "queue_full"]},
                "message": {"type": "string"},
            },
            "required": ["status", "code", "message"],
        }
    },
    "required": ["error"],
}
_REQUEST_ID = {"X-Request-Id": {"description": "The client's X-Request-Id, or a new one", "schema": {"type": "string"}}}
_RETRY = {"Retry-After": {"description": "Seconds to wait before trying again", "schema": {"type": "string"}}}
_ALLOW = {"Allow": {"description": "The methods the path takes", "schema": {"type": "string"}}}


def _json(description: str, schema: dict, headers: dict | None = None) -> dict:
    return {
        "description": description,
        "headers": {**_REQUEST_ID, **(headers or {})},
        "content": {"application/json": {"schema": schema}},
    }


def _error(description: str, headers: dict | None = None) -> dict:
    return _json(description, {"$ref": REF + "Error"}, headers)


def _errors(*statuses: int) -> dict:
    """The errors every operation can get, and those named."""
    common = {
        "405": _error("Method not allowed on this path", _ALLOW),
        "408": _error("Headers or body not received within the read timeout (the connection closes)"),
        "413": _error("Body over the limit (the connection closes)"),
        "503": _error("Too many connections, queue full, timed out, starting or shutting down", _RETRY),
    }
    named = {
        400: _error("Body not UTF-8 or not JSON"),
        422: _error("Wrong shape, empty utterance, an utterance the model cannot take, too many items"),
    }
    return {**{str(s): named[s] for s in statuses}, **common}


def openapi_schema(settings) -> dict:
    """The schema with this process's limits filled in."""
    utterance = {"type": "string", "pattern": r"\S", "description": "Anything but empty or only whitespace."}
    request = {
        "oneOf": [
            {
                "type": "object",
                "properties": {"utterance": utterance, "truncate": {"type": "boolean"}},
                "required": ["utterance"],
                "additionalProperties": False,
            },
            {
                "type": "object",
                "properties": {
                    "utterances": {
                        "type": "array",
                        "items": {"type": "string"},
                        "minItems": 1,
                        "maxItems": settings.max_items,
                    },
                    "truncate": {"type": "boolean"},
                },
                "required": ["utterances"],
                "additionalProperties": False,
            },
        ]
    }

    def get(summary: str, schema: dict, *, media: str = "application/json", more: dict | None = None) -> dict:
        ok = {"description": "OK", "headers": _REQUEST_ID, "content": {media: {"schema": schema}}}
        return {"get": {"summary": summary, "responses": {"200": ok, **(more or {}), **_errors()}}}

    return {
        "openapi": "3.1.0",
        "info": {"title": "mtop-edge", "version": __version__, "description": "MTOP semantic parsing over HTTP."},
        "paths": {
            "/v1/parse": {
                "post": {
                    "summary": "Parse one utterance or a list (dynamically batched with concurrent requests)",
                    "requestBody": {
                        "required": True,
                        "description": f"At most {settings.max_body_bytes} bytes.",
                        "content": {"application/json": {"schema": request}},
                    },
                    "responses": {
                        "200": _json(
                            "One result (with `model`) for `utterance`; `{results, model}` for `utterances`, a bad "
                            "item carrying `error`",
                            {"oneOf": [{"$ref": REF + "Single"}, {"$ref": REF + "Batch"}]},
                        ),
                        **_errors(400, 422),
                    },
                }
            },
            "/v1/model": get("The model: id (name@hash), kind, architecture, quantization, scores", {"type": "object"}),
            "/healthz": get("The process is alive", {"type": "object"}),
            "/readyz": get(
                "Ready to parse",
                {"type": "object"},
                more={"503": _json("Starting or shutting down", {"type": "object"}, _RETRY)},
            ),
            "/metrics": get("Prometheus text format", {"type": "string"}, media="text/plain"),
            "/openapi.json": get("This document", {"type": "object"}),
            "/": get("A page to try the parser in a browser", {"type": "string"}, media="text/html"),
        },
        "components": {
            "schemas": {
                "Result": _RESULT,
                "Single": _SINGLE,
                "Batch": _BATCH,
                "Slot": _SLOT,
                "Intent": _INTENT,
                "Error": _ERROR,
            }
        },
    }
