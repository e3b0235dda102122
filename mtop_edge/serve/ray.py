"""The service on Ray Serve (the ``ray`` extra): the same HTTP contract, batched with ``@serve.batch``.

Each replica loads the model once and serves the very ASGI app the native server runs
(``app.Service``: routes, errors, guard, OpenAPI document), built after the model has loaded
(``__serve_build_asgi_app__``); only the parse step differs: concurrent calls on a replica are
coalesced by ``@serve.batch`` (``--max-batch`` calls, ``--max-wait-ms``) instead of the native
`Batcher`. Run it with ``mtop-edge serve --ray`` or ``serve run mtop_edge.serve.ray:app
model=DIR replicas=2``.
"""

from __future__ import annotations

import asyncio
import typing
from dataclasses import asdict

from ray import serve

from mtop_edge.runtime.results import ParseResult
from mtop_edge.serve.settings import ServeSettings

DEPLOYMENT = "mtop-edge"


@serve.deployment(name=DEPLOYMENT)
@serve.ingress()
class RayParser:
    """One replica: a loaded Parser behind the service's ASGI app."""

    def __init__(self, settings: dict) -> None:
        from mtop_edge.serve.app import Service, load_parser, model_summary
        from mtop_edge.serve.metrics import Metrics

        self.settings = ServeSettings(**settings)
        self.parser = load_parser(self.settings)
        self.metrics = Metrics()
        self.batched.set_max_batch_size(self.settings.max_batch)
        self.batched.set_batch_wait_timeout_s(self.settings.max_wait_ms / 1000)
        self.service = Service(
            {**model_summary(self.parser, self.settings), "replica": _replica_name()},
            self.settings,
            self.parse,
            lambda: True,
            self.metrics,
        )

    def __serve_build_asgi_app__(self):
        return self.service.app(request_ids=False)  # Ray's proxy stamps X-Request-Id (the client's, or its own)

    async def parse(self, utterances: list[str], truncate: bool) -> list[ParseResult]:
        return await self.batched((utterances, truncate))

    @serve.batch(max_batch_size=32, batch_wait_timeout_s=0.0)
    async def batched(self, calls: list[tuple[list[str], bool]]) -> list[list[ParseResult]]:
        """The calls that arrived together, parsed as one runtime batch per ``truncate`` setting."""
        answers: list[list[ParseResult] | None] = [None] * len(calls)
        for truncate in (False, True):
            chosen = [i for i, (_, flag) in enumerate(calls) if flag == truncate]
            utterances = [u for i in chosen for u in calls[i][0]]
            if not utterances:
                continue
            self.metrics.batch(len(utterances))
            results = await asyncio.to_thread(self.parser.parse_batch, utterances, truncate=truncate, strict=False)
            self.metrics.parsed(len(utterances))
            start = 0
            for i in chosen:
                answers[i] = results[start : start + len(calls[i][0])]
                start += len(calls[i][0])
        return answers


def _replica_name() -> str:
    context = serve.get_replica_context()
    replica = getattr(context, "replica_id", None)
    return str(getattr(replica, "unique_id", replica) or getattr(context, "replica_tag", ""))


def logging_config(settings: ServeSettings) -> dict:
    """Ray Serve's logging as the native server's: an access log only with ``access_log``, warnings
    and errors otherwise (Ray's default logs every request, in the proxy and again in the replica)."""
    return {"enable_access_log": settings.access_log, "log_level": "WARNING"}


def deployment(settings: ServeSettings, replicas: int = 1):
    """The bound application: ``replicas`` replicas, each queueing at most ``max_queue`` requests."""
    return RayParser.options(
        num_replicas=replicas,
        max_ongoing_requests=max(settings.max_batch * 2, 8),
        max_queued_requests=settings.max_queue,
        ray_actor_options={"num_cpus": settings.threads or 1},
        logging_config=logging_config(settings),
    ).bind(asdict(settings))


def app(args: dict):
    """The ``serve run mtop_edge.serve.ray:app model=DIR replicas=2 max_batch=32`` target: ``args`` are
    ServeSettings fields plus ``replicas``, as text (``serve run``) or typed (a ``serve deploy`` YAML).

    Raises:
        ConfigError: an unknown field, or a value of the wrong type (all of them named at once).
    """
    from mtop_edge.config import field_types, load_config

    types = field_types(ServeSettings)
    values = {key: _typed(value, types.get(key, str)) for key, value in args.items() if key != "replicas"}
    return deployment(load_config(ServeSettings, None, values), int(args.get("replicas", 1)))


def _typed(value, annotation):
    """``value`` as the field's type when it came as text (``X | None`` fields take X)."""
    kind = next((t for t in typing.get_args(annotation) if t is not type(None)), annotation)
    if not isinstance(value, str) or kind is str:
        return value
    if kind is bool:
        return value.strip().lower() in ("1", "true", "yes")
    try:
        return kind(value)
    except ValueError:
        return value  # load_config names the field and the type it wanted
