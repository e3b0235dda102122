"""The HTTP contract: routes, JSON errors and metrics, around any way of parsing a batch.

`Service` is the contract: ``POST /v1/parse`` (one utterance or a list), ``GET /v1/model``,
``/healthz``, ``/readyz``, ``/metrics``, ``/openapi.json`` and the page at ``/``. What parses is
handed in (``parse``: an async function of utterances and ``truncate``). `create_app` builds the
app around one loaded Parser, its requests coalesced by a `Batcher`: a native worker and a Ray Serve
replica (``serve/ray.py``) each serve one.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import asdict

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, Response
from starlette.routing import Route

from mtop_edge.runtime import Parser, share_thread_pool
from mtop_edge.runtime.results import ParseResult
from mtop_edge.serve.batcher import Batcher, DrainingError, QueueFullError
from mtop_edge.serve.guard import Guard
from mtop_edge.serve.metrics import Metrics
from mtop_edge.serve.openapi import openapi_schema
from mtop_edge.serve.page import PAGE
from mtop_edge.serve.settings import ServeSettings
from mtop_edge.serve.validation import ApiError, read_parse_request

STATUS_CODES = {404: "not_found", 405: "method_not_allowed"}
Parse = Callable[[list[str], bool], Awaitable[list[ParseResult]]]


def model_summary(parser: Parser, settings: ServeSettings) -> dict:
    """``GET /v1/model``: which model answers, what it is, and what it scored."""
    manifest = parser.manifest
    raw = manifest.raw
    return {
        "id": manifest.model_id,
        "name": raw.get("name"),
        "kind": raw.get("kind", "t5"),
        "sha256": raw.get("source", {}).get("sha256"),
        "profile": raw.get("profile"),
        "quantization": manifest.quantization,
        "architecture": asdict(manifest.architecture),
        "max_words": parser.spec.vocab.max_pointers,
        "size_bytes": raw.get("total_bytes"),
        "evaluation": raw.get("evaluation", {}),
        "device": parser.decoder.device,
        "threads": settings.threads,  # null: onnxruntime's default
        "min_confidence": parser.min_confidence,
    }


class Service:
    """The routes of the contract over ``parse``; ``ready()`` says whether parsing is possible now."""

    def __init__(
        self, summary: dict, settings: ServeSettings, parse: Parse, ready: Callable[[], bool], metrics: Metrics
    ) -> None:
        self.summary, self.settings, self.parse_batch, self.ready, self.metrics = (
            summary,
            settings,
            parse,
            ready,
            metrics,
        )
        self.pending: Callable[[], int] = lambda: 0  # utterances queued or being parsed (set by the owner)

    def error_response(self, error: ApiError) -> JSONResponse:
        self.metrics.error(error.code)
        return JSONResponse(error.to_json(), status_code=error.status, headers=error.headers)

    def route(self, path: str, methods: list[str], endpoint: Callable[[Request], Awaitable[Response]]) -> Route:
        """An endpoint whose ApiErrors become JSON errors, every answer counted and timed by route."""

        async def handle(request: Request) -> Response:
            started = time.perf_counter()
            try:
                response = await endpoint(request)
            except ApiError as error:
                response = self.error_response(error)
            self.metrics.request(path, response.status_code, time.perf_counter() - started)
            return response

        return Route(path, handle, methods=methods)

    async def parse(self, request: Request) -> Response:
        if not self.ready():
            raise ApiError(503, "unavailable", "the service is starting or shutting down", {"Retry-After": "1"})
        parse_request = read_parse_request(await request.body(), max_items=self.settings.max_items)
        try:
            results = await asyncio.wait_for(
                self.parse_batch(parse_request.utterances, parse_request.truncate), self.settings.request_timeout
            )
        except QueueFullError as exc:
            raise ApiError(503, "queue_full", f"server busy: {exc}", {"Retry-After": "1"}) from None
        except DrainingError as exc:
            raise ApiError(503, "unavailable", str(exc), {"Retry-After": "1"}) from None
        except TimeoutError:
            message = f"not parsed within {self.settings.request_timeout:g} s"
            raise ApiError(503, "timeout", message, {"Retry-After": "1"}) from None
        if parse_request.single and results[0].rejected:  # one utterance: a refused one is the request's error
            raise ApiError(422, "invalid_utterance", results[0].error)
        records = [r.to_json() for r in results]
        for record in records:
            if "error" in record:
                self.metrics.error("item_error")
        if parse_request.single:
            return JSONResponse({**records[0], "model": self.summary["id"]})
        return JSONResponse({"results": records, "model": self.summary["id"]})

    async def model(self, request: Request) -> Response:
        return JSONResponse(self.summary)

    async def healthz(self, request: Request) -> Response:
        return JSONResponse({"status": "ok"})

    async def readyz(self, request: Request) -> Response:
        if not self.ready():
            return JSONResponse({"status": "unavailable"}, status_code=503, headers={"Retry-After": "1"})
        return JSONResponse({"status": "ready", "model": self.summary["id"], "queue_depth": self.pending()})

    async def prometheus(self, request: Request) -> Response:
        self.metrics.queued(self.pending())
        return Response(self.metrics.render(), media_type="text/plain; version=0.0.4; charset=utf-8")

    async def openapi(self, request: Request) -> Response:
        return JSONResponse(openapi_schema(self.settings))

    async def page(self, request: Request) -> Response:
        return HTMLResponse(PAGE)

    async def http_error(self, request: Request, exc: HTTPException) -> Response:
        code = STATUS_CODES.get(exc.status_code, "http_error")
        headers = dict(exc.headers or {})
        if "Allow" in headers:  # Starlette joins a set: the same order in every process
            headers["Allow"] = ", ".join(sorted(m.strip() for m in headers["Allow"].split(",")))
        error = ApiError(exc.status_code, code, f"{request.method} {request.url.path}: {exc.detail}", headers)
        self.metrics.request("other", exc.status_code)
        return self.error_response(error)  # a 405 keeps Starlette's Allow header

    def app(self, lifespan=None, *, request_ids: bool = True):
        """The ASGI app: the routes behind the guard (body limits, read timeout and, unless a proxy in
        front stamps them already, request ids)."""
        routes = [
            self.route("/", ["GET"], self.page),
            self.route("/v1/parse", ["POST"], self.parse),
            self.route("/v1/model", ["GET"], self.model),
            self.route("/healthz", ["GET"], self.healthz),
            self.route("/readyz", ["GET"], self.readyz),
            self.route("/metrics", ["GET"], self.prometheus),
            self.route("/openapi.json", ["GET"], self.openapi),
        ]
        starlette = Starlette(routes=routes, exception_handlers={HTTPException: self.http_error}, lifespan=lifespan)
        return Guard(starlette, self.settings, on_error=self.metrics.error, request_ids=request_ids)


def load_parser(settings: ServeSettings) -> Parser:
    """The parser one worker process or Ray replica serves: loaded once, with its own thread pool on a
    CPU (the process runs no other onnxruntime sessions)."""
    pool = share_thread_pool(settings.threads) if settings.device == "cpu" else None
    return Parser.load(
        settings.model,
        device=settings.device,
        threads=settings.threads,
        pool=pool,
        min_confidence=settings.min_confidence,
    )


def create_app(
    parser: Parser,
    settings: ServeSettings | None = None,
    metrics: Metrics | None = None,
    *,
    summary: dict | None = None,
    request_ids: bool = True,
):
    """The service around one loaded parser, requests coalesced by a `Batcher` started in the app's
    lifespan; ``summary`` adds to ``GET /v1/model``, ``request_ids=False`` where a proxy stamps them."""
    settings = settings or ServeSettings()
    metrics = metrics or Metrics()
    state: dict = {"batcher": None}

    def parse_batch(utterances, truncate: bool):
        results = parser.parse_batch(utterances, truncate=truncate, strict=False)
        metrics.parsed(len(utterances))
        return results

    async def parse(utterances: list[str], truncate: bool) -> list[ParseResult]:
        batcher: Batcher = state["batcher"]
        try:
            return await batcher.submit(utterances, truncate=truncate)
        finally:
            metrics.queued(batcher.pending)

    def ready() -> bool:
        return state["batcher"] is not None and not state["batcher"].draining

    service = Service({**model_summary(parser, settings), **(summary or {})}, settings, parse, ready, metrics)
    service.pending = lambda: state["batcher"].pending if state["batcher"] is not None else 0

    @asynccontextmanager
    async def lifespan(app):
        batcher = Batcher(
            parse_batch,
            max_batch=settings.max_batch,
            max_wait_ms=settings.max_wait_ms,
            max_queue=settings.max_queue,
            observe_batch=metrics.batch,
        )
        batcher.start()
        state["batcher"] = batcher
        try:
            yield
        finally:  # uvicorn has stopped accepting and waited for open requests; finish what is queued
            await batcher.drain(settings.drain_seconds)

    return service.app(lifespan, request_ids=request_ids)
