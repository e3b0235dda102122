"""An ASGI layer in front of the routes: request ids, body size, body read time.

The guard reads each request's body itself, so a limit is enforced before any route runs and no
error crosses the framework's 500 handler:

- a body over ``max_body_bytes`` (announced by Content-Length, or counted as it arrives) gets its
  413 at once, and the rest of the body is then read and thrown away, up to ``drain_body_bytes``
  or ``drain_body_seconds``, before the connection closes: clients that send the whole body before
  reading (urllib, requests) then read the 413 instead of a reset connection (nginx calls this a
  lingering close); past the bound the connection closes;
- a body that does not arrive within ``read_timeout`` gets 408 and the connection closes, so a
  client trickling its body holds no batch slot and no parse worker;
- every response carries ``X-Request-Id``: the client's own (if it sent a sane one) or a new one.
"""

from __future__ import annotations

import asyncio
import json
import re
import time
import uuid
from collections.abc import Callable

from mtop_edge.serve.settings import ServeSettings

REQUEST_ID = "x-request-id"
_SANE_ID = re.compile(r"^[A-Za-z0-9._:-]{1,64}$")


def error_body(status: int, code: str, message: str) -> bytes:
    """The JSON every error answer carries (``validation.ApiError.to_json``'s shape)."""
    return json.dumps({"error": {"status": status, "code": code, "message": message}}).encode()


class Guard:
    """Wraps an ASGI app; ``on_error(code)`` is told of every request the guard answers itself."""

    def __init__(
        self,
        app,
        settings: ServeSettings,
        on_error: Callable[[str], None] = lambda _: None,
        *,
        request_ids: bool = True,
    ) -> None:
        self.app, self.settings, self.on_error, self.request_ids = app, settings, on_error, request_ids

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = dict(scope.get("headers", ()))
        given = headers.get(REQUEST_ID.encode(), b"").decode("latin-1")
        request_id = given if _SANE_ID.match(given) else uuid.uuid4().hex

        stamp = (REQUEST_ID.encode(), request_id.encode())

        async def send_with_id(message) -> None:
            if message["type"] == "http.response.start" and self.request_ids:
                message = {**message, "headers": [*message.get("headers", []), stamp]}
            await send(message)

        if scope["method"] in ("GET", "HEAD") and b"content-length" not in headers:
            await self.app(scope, receive, send_with_id)
            return
        body = await self._read(headers.get(b"content-length"), receive, send_with_id)
        if body is None:  # answered already
            return
        delivered = False

        async def replay():
            nonlocal delivered
            if not delivered:
                delivered = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        await self.app(scope, replay, send_with_id)

    async def _read(self, declared: bytes | None, receive, send) -> bytes | None:
        """The whole body, or None when the guard has answered (413, 408, or the client left)."""
        limit = self.settings.max_body_bytes
        if declared is not None and declared.isdigit() and int(declared) > limit:
            await self._too_large(receive, send, read=0)
            return None
        deadline = time.monotonic() + self.settings.read_timeout
        chunks, size = [], 0
        while True:
            try:
                message = await asyncio.wait_for(receive(), max(deadline - time.monotonic(), 0.0))
            except TimeoutError:
                message = f"request body not received within {self.settings.read_timeout:g} s"
                await self._answer(send, 408, "read_timeout", message)
                return None
            if message["type"] == "http.disconnect":
                return None
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > limit:
                await self._too_large(receive, send, read=size)
                return None
            chunks.append(chunk)
            if not message.get("more_body", False):
                return b"".join(chunks)

    async def _too_large(self, receive, send, *, read: int) -> None:
        """413 now; then read and discard the rest of the body within the drain bounds, then close."""
        limit = self.settings.max_body_bytes
        await self._answer(send, 413, "body_too_large", f"request body over {limit} bytes", finish=False)
        deadline = time.monotonic() + self.settings.drain_body_seconds
        while read <= self.settings.drain_body_bytes:
            try:
                message = await asyncio.wait_for(receive(), max(deadline - time.monotonic(), 0.0))
            except TimeoutError:
                break
            if message["type"] == "http.disconnect" or not message.get("more_body", False):
                break
            read += len(message.get("body", b""))
        await send({"type": "http.response.body", "body": b"", "more_body": False})

    async def _answer(self, send, status: int, code: str, message: str, *, finish: bool = True) -> None:
        """A JSON error that closes the connection; ``finish`` False leaves the response open (the
        body is complete, its Content-Length says so) for a drain before the final empty chunk."""
        self.on_error(code)
        body = error_body(status, code, message)
        headers = [
            (b"content-type", b"application/json"),
            (b"content-length", str(len(body)).encode()),
            (b"connection", b"close"),
        ]
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": body, "more_body": not finish})
