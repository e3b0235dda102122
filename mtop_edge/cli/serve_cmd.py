"""`mtop-edge serve`: the parser as an HTTP service (the `serve` extra)."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import click

from mtop_edge.choices import RayIngress
from mtop_edge.cli.options import device_option, min_confidence_option, shared_pool
from mtop_edge.errors import MtopEdgeError, require


@click.command("serve", context_settings={"show_default": True})
@click.option(
    "--model",
    "model_dir",
    type=click.Path(path_type=Path),
    help="Model directory from `mtop-edge export`, or an embedded model's name (`mtop-edge models`) "
    "[default: the embedded default].",
)
@click.option("--host", default="127.0.0.1", help="Address to listen on (0.0.0.0 for every interface).")
@click.option("--port", default=8080, type=click.IntRange(0, 65535))
@device_option()
@click.option(
    "--threads",
    type=click.IntRange(min=1),
    help="onnxruntime threads per worker [default: onnxruntime's; with --workers N, the cores / N].",
)
@click.option(
    "--workers",
    default=1,
    type=click.IntRange(min=1),
    help="Processes, each with its own model (one per core served fastest on 2 cores: benchmarks/README.md).",
)
@click.option(
    "--max-batch", default=32, type=click.IntRange(min=1), help="Utterances per runtime batch (1 = no batching)."
)
@click.option(
    "--max-wait-ms",
    default=0.0,
    type=click.FloatRange(min=0),
    help="Hold a batch open this long for more requests (0: take what is waiting, never wait).",
)
@click.option("--max-queue", default=1024, type=click.IntRange(min=1), help="Utterances waiting before 503.")
@click.option("--max-items", default=256, type=click.IntRange(min=1), help="Utterances in one request.")
@click.option(
    "--max-body-bytes", default=1 << 20, type=click.IntRange(min=64), help="Largest request body (413 above)."
)
@click.option(
    "--drain-seconds", default=30.0, type=click.FloatRange(min=0), help="On SIGTERM, time to finish accepted work."
)
@click.option(
    "--max-connections",
    default=512,
    type=click.IntRange(min=1),
    help="Open connections per worker; more are answered 503 with Retry-After.",
)
@click.option(
    "--read-timeout",
    default=10.0,
    type=click.FloatRange(min=0.1),
    help="Seconds a request's headers, and then its body, may take to arrive (then 408 and close).",
)
@click.option(
    "--request-timeout",
    default=30.0,
    type=click.FloatRange(min=0.1),
    help="Seconds an accepted request may wait for its parse (then 503 with Retry-After).",
)
@min_confidence_option
@click.option("--access-log/--no-access-log", default=False, help="Log every request (uvicorn's access log).")
@click.option("--ray", "on_ray", is_flag=True, help="Serve on Ray Serve (the ray extra) instead of local workers.")
@click.option("--replicas", default=1, type=click.IntRange(min=1), help="--ray: replicas, each with its own model.")
@click.option("--address", help="--ray: join this Ray cluster (default: start a local one).")
@click.option(
    "--ingress",
    type=click.Choice([i.value for i in RayIngress]),
    default=RayIngress.HAPROXY.value,
    help="--ray, local cluster: HAProxy straight to the replicas, or Ray's Python proxy (docs/scaling.md).",
)
@click.pass_context
def command(
    ctx, model_dir, host, port, device, threads, workers, on_ray, replicas, address, ingress, **options
) -> None:
    """Serve POST /v1/parse, GET /v1/model, /healthz, /readyz, /metrics, /openapi.json and a page at /.

    \b
    mtop-edge serve &
    curl -s localhost:8080/v1/parse -d '{"utterance": "set an alarm"}'

    Requests that arrive while a batch runs are parsed together in the next one (up to --max-batch
    utterances). With --workers N each worker is its own process with its own model; on Linux each
    listens on its own SO_REUSEPORT socket, and a worker that dies is restarted. SIGTERM stops
    accepting, finishes what was accepted, then exits.
    """
    for module in ("starlette", "uvicorn", "prometheus_client"):
        require(module, "serve")
    from mtop_edge.runtime import Parser
    from mtop_edge.serve.server import Supervisor, serve_app
    from mtop_edge.serve.settings import ServeSettings

    if workers > 1 and threads is None and device == "cpu":
        # split the cores between the workers: N processes each sized to every core oversubscribe them
        threads = max(1, (os.cpu_count() or 1) // workers)
    model = str(model_dir) if model_dir else None
    settings = ServeSettings(
        model=model, device=device, threads=threads, host=host, port=port, workers=workers, **options
    )
    if on_ray:
        _serve_on_ray(settings, replicas, address, RayIngress(ingress))
        return
    pool = shared_pool(ctx, device, threads) if workers == 1 else None  # each worker makes its own
    load = {"device": device, "threads": threads, "min_confidence": settings.min_confidence}
    parser = Parser.load(model, pool=pool, **load)  # a broken model fails here, in one line
    where = f"{device}, {workers} worker(s) x {threads or 'default'} thread(s), http://{host}:{port}"
    click.echo(f"mtop-edge serve: model {parser.manifest.model_id} on {where}", err=True)
    if workers == 1:
        from mtop_edge.serve.app import create_app

        serve_app(create_app(parser, settings), settings)
        return
    del parser  # each worker process loads its own
    sys.exit(Supervisor(settings, log=lambda line: click.echo(line, err=True)).run())


def _serve_on_ray(settings, replicas: int, address: str | None, ingress: RayIngress) -> None:
    """Ray Serve on ``address`` (or a local cluster with ``ingress``) until SIGTERM/SIGINT, then shut it
    down. A cluster of one's own has the ingress it was started with (docs/scaling.md)."""
    require("ray", "ray")
    import signal
    import threading

    if address is None:  # before Ray is imported: Serve reads these once, in every process it starts
        from mtop_edge.serve.ray_ingress import busy_ingress_ports, ingress_environment

        os.environ.update(ingress_environment(ingress))
        busy = busy_ingress_ports(ingress)
        if busy:
            raise MtopEdgeError(
                f"HAProxy's ports are in use ({', '.join(busy)}; another `serve --ray` here?): "
                "set those variables to free ports, or pass --ingress proxy"
            )
    import ray
    from ray import serve

    from mtop_edge.serve.ray import DEPLOYMENT, deployment, logging_config

    ray.init(address=address, ignore_reinit_error=True, logging_level="ERROR", log_to_driver=False)
    try:
        options = {"host": settings.host, "port": settings.port}
        serve.start(http_options=options, logging_config=logging_config(settings))
        serve.run(deployment(settings, replicas), name=DEPLOYMENT, route_prefix="/", blocking=False)
    except Exception as exc:  # Ray's errors are tracebacks from other processes: say what failed, stop all
        serve.shutdown()
        ray.shutdown()
        raise MtopEdgeError(f"Ray Serve did not start: {str(exc).splitlines()[0]}") from None
    front = ingress.value if address is None else "the cluster's"
    where = f"{replicas} replica(s) on Ray {ray.__version__}, {front} ingress, http://{settings.host}:{settings.port}"
    click.echo(f"mtop-edge serve --ray: {where}", err=True)
    stop = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: stop.set())
    stop.wait()
    serve.shutdown()
    ray.shutdown()
