"""uvicorn's HTTP protocol (httptools) with two limits it lacks: a deadline for a request's headers,
and a cap on open connections.

uvicorn times out idle keep-alive connections, but any byte resets that timer, so a client that
sends its headers a byte a second holds a connection forever. Here the headers of every request
must be complete within ``read_timeout`` of the connection opening (or of the last response);
otherwise the client gets 408 and the connection closes. A connection beyond ``max_connections``
is answered 503 with ``Retry-After`` and closed before anything is read.
"""

from __future__ import annotations

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from mtop_edge.serve.guard import error_body
from mtop_edge.serve.settings import ServeSettings


def _response(status: str, body: bytes, extra: bytes = b"") -> bytes:
    return (
        f"HTTP/1.1 {status}\r\ncontent-type: application/json\r\ncontent-length: {len(body)}\r\n".encode()
        + extra
        + b"connection: close\r\n\r\n"
        + body
    )


def guarded_protocol(settings: ServeSettings, on_error=lambda _: None) -> type[HttpToolsProtocol]:
    """The protocol class for uvicorn's ``http`` setting, with this service's limits."""
    read_timeout, max_connections = settings.read_timeout, settings.max_connections
    busy = _response(
        "503 Service Unavailable",
        error_body(503, "too_many_connections", f"more than {max_connections} open connections"),
        b"retry-after: 1\r\n",
    )
    slow = _response(
        "408 Request Timeout",
        error_body(408, "read_timeout", f"request headers not received within {read_timeout:g} s"),
    )

    class GuardedProtocol(HttpToolsProtocol):
        _header_timer = None

        def connection_made(self, transport) -> None:
            super().connection_made(transport)
            if len(self.connections) > max_connections:
                on_error("too_many_connections")
                transport.write(busy)
                transport.close()
                return
            self._arm()

        def _arm(self) -> None:
            self._disarm()
            self._header_timer = self.loop.call_later(read_timeout, self._headers_late)

        def _disarm(self) -> None:
            if self._header_timer is not None:
                self._header_timer.cancel()
                self._header_timer = None

        def _headers_late(self) -> None:
            if not self.transport.is_closing():
                on_error("read_timeout")
                self.transport.write(slow)
                self.transport.close()

        def on_headers_complete(self) -> None:
            self._disarm()
            super().on_headers_complete()

        def on_response_complete(self) -> None:
            pipelined = bool(self.pipeline)  # a pipelined request's headers are in already
            super().on_response_complete()
            if not pipelined and not self.transport.is_closing():
                self._arm()  # the next request's headers are due within the deadline too

        def connection_lost(self, exc) -> None:
            self._disarm()
            super().connection_lost(exc)

    return GuardedProtocol
