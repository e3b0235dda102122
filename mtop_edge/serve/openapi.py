"""The service's OpenAPI 3.1 description, served at ``GET /openapi.json`` and quoted in the README."""

from __future__ import annotations

from mtop_edge import __version__

_SLOT = {
    "type": "object",
    "description": "A slot: text with character offsets into the utterance, or a nested intent.",
    "properties": {
        "label": {"type": "string", "examples": ["SL:DATE_TIME"]},
        "text": {"type": "string"},
        "start": {"type": "integer"},
        "end": {"type": "integer"},
        "intent": {"$ref": "#/components/schemas/Intent"},
    },
    "required": ["label"],
}
_RESULT = {
    "type": "object",
    "properties": {
        "utterance": {"type": "string"},
        "logical_form": {"type": ["string", "null"], "examples": ["[IN:CREATE_ALARM [SL:DATE_TIME for 7am ] ]"]},
        "intent": {"type": ["string", "null"]},
        "slots": {"type": "array", "items": {"$ref": "#/components/schemas/Slot"}},
        "truncated": {"type": "boolean"},
        "error": {"type": "string", "description": "Set when this item could not be parsed (list requests)."},
    },
    "required": ["utterance", "logical_form", "intent", "slots"],
}
_ERROR = {
    "type": "object",
    "properties": {
        "error": {
            "type": "object",
            "properties": {"status": {"type": "integer"}, "code": {"type": "string"}, "message": {"type": "string"}},
            "required": ["status", "code", "message"],
        }
    },
}


def _error(description: str) -> dict:
    return {
        "description": description,
        "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}},
    }


def openapi_schema(settings) -> dict:
    """The schema with this process's limits filled in."""
    request = {
        "oneOf": [
            {
                "type": "object",
                "properties": {"utterance": {"type": "string", "minLength": 1}, "truncate": {"type": "boolean"}},
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
    ok = {"description": "OK", "content": {"application/json": {"schema": {"type": "object"}}}}
    return {
        "openapi": "3.1.0",
        "info": {"title": "mtop-edge", "version": __version__, "description": "MTOP semantic parsing over HTTP."},
        "paths": {
            "/v1/parse": {
                "post": {
                    "summary": "Parse one utterance or a list (dynamically batched with concurrent requests)",
                    "requestBody": {"required": True, "content": {"application/json": {"schema": request}}},
                    "responses": {
                        "200": {
                            "description": "One result (with `model`) for `utterance`; `{results: [...], model}` "
                            "for `utterances`, a bad item carrying `error`",
                            "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Result"}}},
                        },
                        "400": _error("Body not UTF-8 or not JSON"),
                        "413": _error(f"Body over {settings.max_body_bytes} bytes"),
                        "422": _error("Wrong shape, empty utterance, too many words or items"),
                        "503": _error("Queue full or shutting down (see Retry-After)"),
                    },
                }
            },
            "/v1/model": {
                "get": {
                    "summary": "The model: id (name@hash), architecture, quantization, scores, device, threads",
                    "responses": {"200": ok},
                }
            },
            "/healthz": {"get": {"summary": "The process is alive", "responses": {"200": ok}}},
            "/readyz": {
                "get": {
                    "summary": "Ready to parse (503 while starting or draining)",
                    "responses": {"200": ok, "503": ok},
                }
            },
            "/metrics": {
                "get": {"summary": "Prometheus text format", "responses": {"200": {"description": "metrics"}}}
            },
        },
        "components": {
            "schemas": {
                "Result": _RESULT,
                "Slot": _SLOT,
                "Intent": {
                    "type": "object",
                    "properties": {
                        "intent": {"type": "string"},
                        "slots": {"type": "array", "items": {"$ref": "#/components/schemas/Slot"}},
                    },
                },
                "Error": _ERROR,
            }
        },
    }
