"""The ASGI app: routes, JSON errors, metrics, and the batcher's life cycle.

``create_app(parser)`` builds a Starlette app around one loaded Parser; ``app_from_environment``
is the factory each `--workers` process calls (settings travel in an environment variable).
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import asdict, dataclass

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import ClientDisconnect, Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from mtop_edge.runtime import Parser, share_thread_pool
from mtop_edge.serve.batcher import Batcher, DrainingError, QueueFullError
from mtop_edge.serve.metrics import Metrics
from mtop_edge.serve.openapi import openapi_schema
from mtop_edge.serve.validation import ApiError, read_parse_request

SETTINGS_ENV = "MTOP_EDGE_SERVE_SETTINGS"
STATUS_CODES = {404: "not_found", 405: "method_not_allowed"}


@dataclass(frozen=True)
class ServeSettings:
    """What `mtop-edge serve` configures; defaults are the CLI's."""

    model: str | None = None
    device: str = "cpu"
    threads: int | None = None
    max_batch: int = 32
    max_wait_ms: float = 0.0
    max_queue: int = 1024
    max_items: int = 256
    max_body_bytes: int = 1 << 20
    drain_seconds: float = 30.0


def model_summary(parser: Parser) -> dict:
    """``GET /v1/model``: which model answers, what it is, and what it scored."""
    manifest = parser.manifest
    raw = manifest.raw
    return {
        "id": manifest.model_id,
        "name": raw.get("name"),
        "sha256": raw.get("source", {}).get("sha256"),
        "profile": raw.get("profile"),
        "quantization": manifest.quantization,
        "architecture": asdict(manifest.architecture),
        "max_words": parser.spec.vocab.max_pointers,
        "size_bytes": raw.get("total_bytes"),
        "evaluation": raw.get("evaluation", {}),
        "device": parser.decoder.device,
    }


def create_app(parser: Parser, settings: ServeSettings = ServeSettings()) -> Starlette:
    """The service around one loaded parser."""
    metrics = Metrics()
    summary = {**model_summary(parser), "threads": settings.threads}  # null: onnxruntime's default
    state: dict = {"batcher": None}

    def parse_batch(utterances, truncate: bool):
        results = parser.parse_batch(utterances, truncate=truncate, strict=False)
        metrics.utterances.inc(len(utterances))
        return results

    def error_response(error: ApiError) -> JSONResponse:
        metrics.errors.labels(error.code).inc()
        return JSONResponse(error.to_json(), status_code=error.status, headers=error.headers)

    def route(path: str, methods: list[str]):
        """Wrap an endpoint: ApiError -> JSON error, every answer counted and timed by route."""

        def wrap(endpoint: Callable[[Request], Awaitable[Response]]) -> Route:
            async def handle(request: Request) -> Response:
                started = time.perf_counter()
                try:
                    response = await endpoint(request)
                except ApiError as error:
                    response = error_response(error)
                metrics.requests.labels(path, str(response.status_code)).inc()
                metrics.latency.labels(path).observe(time.perf_counter() - started)
                return response

            return Route(path, handle, methods=methods)

        return wrap

    async def read_body(request: Request) -> bytes:
        declared = request.headers.get("content-length")
        if declared is not None and declared.isdigit() and int(declared) > settings.max_body_bytes:
            raise ApiError(413, "body_too_large", f"request body over {settings.max_body_bytes} bytes")
        chunks, size = [], 0
        try:
            async for chunk in request.stream():
                size += len(chunk)
                if size > settings.max_body_bytes:
                    raise ApiError(413, "body_too_large", f"request body over {settings.max_body_bytes} bytes")
                chunks.append(chunk)
        except ClientDisconnect:
            raise ApiError(400, "client_disconnected", "the client went away before sending its body") from None
        return b"".join(chunks)

    @route("/v1/parse", ["POST"])
    async def parse(request: Request) -> Response:
        batcher: Batcher | None = state["batcher"]
        if batcher is None or batcher.draining:
            raise ApiError(503, "unavailable", "the service is starting or shutting down", {"Retry-After": "1"})
        parse_request = read_parse_request(await read_body(request), max_items=settings.max_items)
        try:
            results = await batcher.submit(parse_request.utterances, truncate=parse_request.truncate)
        except QueueFullError as exc:
            raise ApiError(503, "queue_full", f"server busy: {exc}", {"Retry-After": "1"}) from None
        except DrainingError as exc:
            raise ApiError(503, "unavailable", str(exc), {"Retry-After": "1"}) from None
        finally:
            metrics.queue_depth.set(batcher.pending)
        if parse_request.single and results[0].rejected:  # one utterance: a refused one is the request's error
            raise ApiError(422, "invalid_utterance", results[0].error)
        records = [r.to_json() for r in results]
        for record in records:
            if "error" in record:
                metrics.errors.labels("item_error").inc()
        if parse_request.single:
            return JSONResponse({**records[0], "model": summary["id"]})
        return JSONResponse({"results": records, "model": summary["id"]})

    @route("/v1/model", ["GET"])
    async def model(request: Request) -> Response:
        return JSONResponse(summary)

    @route("/healthz", ["GET"])
    async def healthz(request: Request) -> Response:
        return JSONResponse({"status": "ok"})

    @route("/readyz", ["GET"])
    async def readyz(request: Request) -> Response:
        batcher: Batcher | None = state["batcher"]
        if batcher is None or batcher.draining:
            return JSONResponse({"status": "unavailable"}, status_code=503)
        return JSONResponse({"status": "ready", "model": summary["id"], "queue_depth": batcher.pending})

    @route("/metrics", ["GET"])
    async def prometheus(request: Request) -> Response:
        if state["batcher"] is not None:
            metrics.queue_depth.set(state["batcher"].pending)
        return Response(metrics.render(), media_type="text/plain; version=0.0.4; charset=utf-8")

    @route("/openapi.json", ["GET"])
    async def openapi(request: Request) -> Response:
        return JSONResponse(openapi_schema(settings))

    async def http_error(request: Request, exc: HTTPException) -> Response:
        code = STATUS_CODES.get(exc.status_code, "http_error")
        response = error_response(ApiError(exc.status_code, code, f"{request.method} {request.url.path}: {exc.detail}"))
        metrics.requests.labels("other", str(exc.status_code)).inc()
        return response

    @asynccontextmanager
    async def lifespan(app: Starlette):
        batcher = Batcher(
            parse_batch,
            max_batch=settings.max_batch,
            max_wait_ms=settings.max_wait_ms,
            max_queue=settings.max_queue,
            observe_batch=metrics.batch_size.observe,
        )
        batcher.start()
        state["batcher"] = batcher
        try:
            yield
        finally:  # uvicorn has stopped accepting and waited for open requests; finish what is queued
            await batcher.drain(settings.drain_seconds)

    return Starlette(
        routes=[parse, model, healthz, readyz, prometheus, openapi],
        exception_handlers={HTTPException: http_error},
        lifespan=lifespan,
    )


def app_from_environment() -> Starlette:
    """Factory for each worker process of `mtop-edge serve --workers N`: loads its own model."""
    settings = ServeSettings(**json.loads(os.environ[SETTINGS_ENV]))
    pool = share_thread_pool(settings.threads) if settings.device == "cpu" else None
    parser = Parser.load(settings.model, device=settings.device, threads=settings.threads, pool=pool)
    return create_app(parser, settings)
