"""Running the service: one worker in this process, or N worker processes under a supervisor.

Each worker loads its own model and serves it with uvicorn (the guarded protocol of
``protocol.py``). With ``--workers N`` on Linux every worker binds its own listening socket with
``SO_REUSEPORT`` once its model has loaded, so the kernel spreads new connections over the
workers that are ready (with one shared socket it handed most keep-alive connections to one of
them). Elsewhere the supervisor binds one socket that the workers share. The supervisor restarts
a worker that dies and, on SIGTERM, tells every worker to finish what it accepted and stop.
"""

from __future__ import annotations

import multiprocessing
import os
import shutil
import signal
import socket
import sys
import tempfile
import time

from mtop_edge.serve.settings import ServeSettings

REUSE_PORT = sys.platform.startswith("linux") and hasattr(socket, "SO_REUSEPORT")
RESTART_PAUSE = 1.0  # seconds between restarts of a worker that keeps dying


def listening_socket(host: str, port: int, *, reuse_port: bool) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    if reuse_port:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    sock.bind((host, port))
    sock.listen(2048)
    sock.set_inheritable(True)
    return sock


def serve_app(app, settings: ServeSettings, sock: socket.socket | None = None) -> None:
    """Run ``app`` with uvicorn until SIGTERM (then drain): on ``sock``, or bound to host:port."""
    import uvicorn

    from mtop_edge.serve.protocol import guarded_protocol

    config = uvicorn.Config(
        app,
        host=settings.host,
        port=settings.port,
        http=guarded_protocol(settings),
        log_level="warning",
        access_log=settings.access_log,
        timeout_keep_alive=int(settings.keep_alive_seconds) or 1,
        timeout_graceful_shutdown=int(settings.drain_seconds) or None,
    )
    uvicorn.Server(config).run(sockets=None if sock is None else [sock])


def worker_main(settings: ServeSettings, index: int, inherited: socket.socket | None = None) -> None:
    """One worker process: load the model, bind (or take the shared socket), serve."""
    from mtop_edge.serve.app import create_app, load_parser
    from mtop_edge.serve.metrics import Metrics

    parser = load_parser(settings)
    sock = inherited or listening_socket(settings.host, settings.port, reuse_port=True)
    serve_app(create_app(parser, settings, Metrics(worker=index)), settings, sock)


class Supervisor:
    """Starts ``settings.workers`` worker processes and keeps that many alive until SIGTERM/SIGINT."""

    def __init__(self, settings: ServeSettings, log=print) -> None:
        self.settings, self.log = settings, log
        self.context = multiprocessing.get_context("spawn" if REUSE_PORT else "fork")
        self.shared = None if REUSE_PORT else listening_socket(settings.host, settings.port, reuse_port=False)
        self.workers: dict[int, multiprocessing.Process] = {}
        self.stopping = False

    def _start(self, index: int) -> None:
        process = self.context.Process(
            target=worker_main, args=(self.settings, index, self.shared), name=f"mtop-edge-worker-{index}", daemon=False
        )
        process.start()
        self.workers[index] = process

    def _stop(self, signum, frame) -> None:
        self.stopping = True
        for process in self.workers.values():
            if process.is_alive():
                os.kill(process.pid, signal.SIGTERM)

    def run(self) -> int:
        """Serve until asked to stop; returns the exit status (0 after a clean drain)."""
        from mtop_edge.serve.metrics import MULTIPROCESS_DIR

        metrics_dir = tempfile.mkdtemp(prefix="mtop-edge-metrics-")
        os.environ[MULTIPROCESS_DIR] = metrics_dir  # read by prometheus-client when each worker imports it
        signal.signal(signal.SIGTERM, self._stop)
        signal.signal(signal.SIGINT, self._stop)
        try:
            for index in range(self.settings.workers):
                self._start(index)
            while not self.stopping:
                for index, process in list(self.workers.items()):
                    if not process.is_alive() and not self.stopping:
                        self.log(f"worker {index} (pid {process.pid}) exited with {process.exitcode}: restarting it")
                        self._mark_dead(process.pid)
                        time.sleep(RESTART_PAUSE)
                        self._start(index)
                time.sleep(0.2)
            deadline = time.monotonic() + self.settings.drain_seconds + 5
            for process in self.workers.values():
                process.join(max(deadline - time.monotonic(), 0.1))
                if process.is_alive():
                    process.kill()
            return 0
        finally:
            shutil.rmtree(metrics_dir, ignore_errors=True)

    @staticmethod
    def _mark_dead(pid: int) -> None:
        from prometheus_client import multiprocess

        multiprocess.mark_process_dead(pid)
