"""Dynamic batching: concurrent requests coalesced into one runtime batch, each caller getting its own results.

Requests wait in a bounded queue; one asyncio task takes every request waiting (up to ``max_batch``
utterances) and runs them as one batch on a single worker thread (onnxruntime's own threads do the
math), so the event loop keeps accepting meanwhile. Under load, requests pile up while a batch runs
and the next batch takes them all: batches form without anyone waiting. ``max_wait_ms`` > 0 also
holds a batch open that long for latecomers (measured: at low load it only adds latency).
A request is never split: one larger than ``max_batch`` runs as a batch of its own.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

from mtop_edge.runtime.results import ParseResult

ParseBatch = Callable[[Sequence[str], bool], list[ParseResult]]


class QueueFullError(Exception):
    """More utterances are waiting than ``max_queue`` allows: the caller should retry later."""


class DrainingError(Exception):
    """The service is shutting down and takes no new work."""


@dataclass
class _Job:
    utterances: list[str]
    truncate: bool
    future: asyncio.Future
    queued_at: float = field(default_factory=time.perf_counter)


class Batcher:
    """Coalesces concurrent parse requests; ``observe_batch(size)`` is told each batch's size."""

    def __init__(
        self,
        parse_batch: ParseBatch,
        *,
        max_batch: int = 32,
        max_wait_ms: float = 0.0,
        max_queue: int = 1024,
        observe_batch: Callable[[int], None] = lambda _: None,
    ) -> None:
        self.parse_batch = parse_batch
        self.max_batch = max_batch
        self.max_wait = max_wait_ms / 1000
        self.max_queue = max_queue
        self.observe_batch = observe_batch
        self.pending = 0  # utterances queued or being parsed
        self.draining = False
        self._queue: asyncio.Queue[_Job] = asyncio.Queue()
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="mtop-edge-parse")
        self._task: asyncio.Task | None = None
        self._held: _Job | None = None  # taken from the queue but did not fit the last batch

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run())

    async def submit(self, utterances: list[str], *, truncate: bool = False) -> list[ParseResult]:
        """Queue utterances and wait for their results, in order.

        Raises:
            QueueFullError: the queue holds ``max_queue`` utterances already.
            DrainingError: the service is stopping.
        """
        if self.draining:
            raise DrainingError("the service is shutting down")
        if self.pending + len(utterances) > self.max_queue:
            raise QueueFullError(f"{self.pending} utterances waiting (limit {self.max_queue})")
        job = _Job(utterances, truncate, asyncio.get_running_loop().create_future())
        self.pending += len(utterances)
        await self._queue.put(job)
        return await job.future

    async def _gather(self) -> list[_Job]:
        """The next batch: the held-over or first waiting job, then whatever fits (waiting up to max_wait)."""
        first, self._held = self._held or await self._queue.get(), None
        jobs, size = [first], len(first.utterances)
        deadline = time.perf_counter() + self.max_wait
        while size < self.max_batch:
            if self._queue.empty():
                remaining = deadline - time.perf_counter()
                if remaining <= 0:
                    break
                try:
                    job = await asyncio.wait_for(self._queue.get(), remaining)
                except TimeoutError:
                    break
            else:
                job = self._queue.get_nowait()
            if size + len(job.utterances) > self.max_batch or job.truncate != first.truncate:
                self._held = job  # it starts the next batch
                break
            jobs.append(job)
            size += len(job.utterances)
        return jobs

    async def _run(self) -> None:
        while True:
            jobs = await self._gather()
            await self._run_jobs(jobs)

    async def _run_jobs(self, jobs: list[_Job]) -> None:
        utterances = [u for job in jobs for u in job.utterances]
        self.observe_batch(len(utterances))
        loop = asyncio.get_running_loop()
        try:
            results = await loop.run_in_executor(self._executor, self.parse_batch, utterances, jobs[0].truncate)
        except Exception as exc:  # a runtime failure answers these callers, never kills the loop
            for job in jobs:
                if not job.future.done():
                    job.future.set_exception(exc)
        else:
            start = 0
            for job in jobs:
                if not job.future.done():  # a caller that went away leaves a cancelled future
                    job.future.set_result(results[start : start + len(job.utterances)])
                start += len(job.utterances)
        finally:
            self.pending -= len(utterances)

    async def drain(self, timeout: float = 30.0) -> None:
        """Refuse new work, finish everything accepted (up to ``timeout`` seconds), then stop."""
        self.draining = True
        deadline = time.perf_counter() + timeout
        while self.pending and time.perf_counter() < deadline:
            await asyncio.sleep(0.01)
        if self._task is not None:
            self._task.cancel()
        self._executor.shutdown(wait=True)
