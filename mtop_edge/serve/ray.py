"""The service on Ray Serve (the ``ray`` extra): the same HTTP contract, the same batching.

Each replica loads the model once and serves the very ASGI app a native worker runs
(``app.create_app``: routes, errors, guard, OpenAPI document and its `Batcher`), built after the
model has loaded (``__serve_build_asgi_app__``); Ray runs the app's lifespan, which starts the
batcher. ``--max-batch`` and ``--max-wait-ms`` therefore mean exactly what they mean natively: the
next batch takes what waited while the last one ran. (Ray's ``@serve.batch`` forms each batch as
soon as the previous one is handed off, not when it finishes, so under steady load it ran batches
of one or two rows: benchmarks/README.md, "Scaling out".) Run it with ``mtop-edge serve --ray`` or
``serve run mtop_edge.serve.ray:app model=DIR replicas=2``.
"""

from __future__ import annotations

import typing
from dataclasses import asdict

from ray import serve

from mtop_edge.serve.settings import ServeSettings

DEPLOYMENT = "mtop-edge"


@serve.deployment(name=DEPLOYMENT)
@serve.ingress()
class RayParser:
    """One replica: a loaded Parser behind the service's ASGI app."""

    def __init__(self, settings: dict) -> None:
        from mtop_edge.serve.app import load_parser

        self.settings = ServeSettings(**settings)
        self.parser = load_parser(self.settings)

    def __serve_build_asgi_app__(self):
        from mtop_edge.serve.app import create_app

        # Ray's proxy (or its HAProxy) stamps X-Request-Id: the client's, or its own
        return create_app(self.parser, self.settings, summary={"replica": _replica_name()}, request_ids=False)


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
