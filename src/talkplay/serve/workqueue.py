"""Bounded work queue that runs model calls off the event loop.

``q = WorkQueue(max_concurrency=2, max_queue=32)``; ``await q.run(fn, *args)`` runs ``fn``
in one of ``max_concurrency`` worker threads; ``q.stream(factory)`` runs a generator in a
worker and yields its items asynchronously. At most ``max_concurrency + max_queue``
requests are admitted at once; the next raises ``Busy`` immediately (the API answers 429)
instead of piling up, so the event loop, ``/health`` and static files stay responsive.

Batched: ``WorkQueue(batch_fn=fn, batch_size=16, batch_wait_s=0.01)``; ``q.submit(job)``
yields the job's items asynchronously. One batch thread takes what is waiting (after the
first job, up to ``batch_wait_s`` more for others, at most ``batch_size``) and runs
``fn(jobs, more)``, which yields ``(job, item, last)``; ``more()`` hands it jobs that
arrived since, up to ``batch_size`` in the batch at once, so a long batch takes newcomers
between its steps instead of making them wait for its end. Then ``batch_size + max_queue``
requests are admitted at once.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

T = TypeVar("T")


class Busy(Exception):
    """Raised when the queue is full; carries how many requests are in flight."""


class WorkQueue:
    """A thread pool with admission control: ``WorkQueue(max_concurrency, max_queue)``."""

    def __init__(self, max_concurrency: int = 2, max_queue: int = 32, timeout_s: float = 300.0,
                 batch_fn: BatchFn | None = None, batch_size: int = 1, batch_wait_s: float = 0.01) -> None:
        if max_concurrency < 1:
            raise ValueError("max_concurrency must be at least 1")
        if max_queue < 0:
            raise ValueError("max_queue must not be negative")
        if batch_size < 1 or batch_wait_s < 0:
            raise ValueError("batch_size must be at least 1 and batch_wait_s not negative")
        self.max_concurrency = max_concurrency
        self.max_queue = max_queue
        self.timeout_s = timeout_s
        self.batch_fn, self.batch_size, self.batch_wait_s = batch_fn, batch_size, batch_wait_s
        self._executor = ThreadPoolExecutor(max_concurrency, thread_name_prefix="talkplay-gen")
        self._lock = threading.Lock()
        self._admitted = 0  # running + waiting
        self._running = 0
        self.completed = 0
        self.rejected = 0
        self.batches = 0  # batches started (joins not counted)
        self.largest_batch = 0
        self._pending: list[_Ticket] = []  # batched jobs not yet in a batch
        self._wake = threading.Condition(self._lock)
        self._closed = False
        self._batcher: threading.Thread | None = None
        if batch_fn is not None:
            self._batcher = threading.Thread(target=self._batch_loop, name="talkplay-batch", daemon=True)
            self._batcher.start()

    @property
    def capacity(self) -> int:
        return (self.batch_size if self.batch_fn else self.max_concurrency) + self.max_queue

    def stats(self) -> dict[str, int]:
        with self._lock:
            return {"running": self._running, "waiting": self._admitted - self._running,
                    "max_concurrency": self.max_concurrency, "max_queue": self.max_queue,
                    "batch_size": self.batch_size if self.batch_fn else 1, "batches": self.batches,
                    "largest_batch": self.largest_batch, "completed": self.completed,
                    "rejected": self.rejected}

    def reserve(self) -> None:
        """Admit one request or raise ``Busy``; every admitted request must be released."""
        with self._lock:
            if self._admitted >= self.capacity:
                self.rejected += 1
                raise Busy(f"server is busy: {self._admitted} requests in flight "
                           f"(limit {self.capacity}); retry shortly")
            self._admitted += 1

    def _release(self) -> None:
        with self._lock:
            self._admitted -= 1
            self.completed += 1

    def _call(self, fn: Callable[..., T], args: tuple) -> T:
        with self._lock:
            self._running += 1
        try:
            return fn(*args)
        finally:
            with self._lock:
                self._running -= 1
            self._release()

    async def run(self, fn: Callable[..., T], *args: Any) -> T:
        """Run ``fn(*args)`` in a worker thread; raise ``Busy`` if the queue is full.

        Raises ``TimeoutError`` after ``timeout_s`` (the worker finishes in the background
        and still counts against capacity until it does).
        """
        self.reserve()
        try:
            fut = self._executor.submit(self._call, fn, args)
        except BaseException:
            self._release()
            raise
        return await asyncio.wait_for(asyncio.wrap_future(fut), self.timeout_s)

    def stream(self, factory: Callable[[], Iterator[T]], reserved: bool = False) -> AsyncIterator[T]:
        """Iterate ``factory()`` in a worker thread, yielding items on the event loop.

        Pass ``reserved=True`` when ``reserve()`` was already called (so that ``Busy`` is
        raised before a streaming response starts). Stopping the async iteration early
        (client gone) stops the worker at its next item.
        """
        if not reserved:
            self.reserve()
        loop = asyncio.get_running_loop()
        items: asyncio.Queue = asyncio.Queue()
        stop = threading.Event()

        def put(kind: str, value: Any) -> None:
            try:
                loop.call_soon_threadsafe(items.put_nowait, (kind, value))
            except RuntimeError:  # event loop closed: nobody is listening any more
                stop.set()

        def work() -> None:
            with self._lock:
                self._running += 1
            final: tuple[str, Any] = ("end", None)
            try:
                for item in factory():
                    if stop.is_set():
                        break
                    put("item", item)
            except BaseException as e:  # handed to the consumer, which re-raises it
                final = ("error", e)
            finally:
                # free the slot before the consumer hears the end, so a client that
                # sends its next request at once is not refused
                with self._lock:
                    self._running -= 1
                self._release()
                put(*final)

        try:
            self._executor.submit(work)
        except BaseException:
            self._release()
            raise

        async def consume() -> AsyncIterator[T]:
            try:
                async for value in self._items(items):
                    yield value
            finally:
                stop.set()

        return consume()

    async def _items(self, queue: asyncio.Queue) -> AsyncIterator[Any]:
        """What a worker puts on ``queue``, until its end; an error put there is raised here."""
        while True:
            kind, value = await asyncio.wait_for(queue.get(), self.timeout_s)
            if kind == "end":
                return
            if kind == "error":
                raise value
            yield value

    # -- batched -------------------------------------------------------------------------------
    def submit(self, job: Any, reserved: bool = False) -> AsyncIterator[Any]:
        """Queue ``job`` for the batch thread; iterate its items on the event loop.

        Pass ``reserved=True`` when ``reserve()`` was already called. Stopping the async
        iteration early (client gone) sets ``job.cancelled`` when the job has one, so the
        batch drops its row, or takes the job out of the queue if no batch has it yet.
        """
        if self.batch_fn is None:
            raise RuntimeError("this WorkQueue was made without a batch_fn")
        if not reserved:
            self.reserve()
        loop = asyncio.get_running_loop()
        ticket = _Ticket(job, loop, asyncio.Queue())
        with self._wake:
            self._pending.append(ticket)
            self._wake.notify()

        async def consume() -> AsyncIterator[Any]:
            try:
                async for value in self._items(ticket.items):
                    yield value
            finally:
                if not ticket.done:
                    with self._wake:
                        queued = ticket in self._pending
                        if queued:
                            self._pending.remove(ticket)
                    if queued:
                        ticket.done = True
                        self._release()
                    elif hasattr(job, "cancelled"):
                        job.cancelled = True

        return consume()

    def _finish(self, ticket: _Ticket, final: tuple[str, Any] = ("end", None)) -> None:
        if ticket.done:
            return
        ticket.done = True
        with self._lock:
            self._running -= 1
        self._release()  # before the consumer hears the end: its next request is admitted
        ticket.put(*final)

    def _take(self, room: int) -> list[_Ticket]:
        """Up to ``room`` waiting tickets, now counted as running (call holding the lock)."""
        taken, self._pending = self._pending[:room], self._pending[room:]
        self._running += len(taken)
        return taken

    def _batch_loop(self) -> None:
        while True:
            with self._wake:
                while not self._pending and not self._closed:
                    self._wake.wait()
                if self._closed:
                    return
                # a short wait for the others: listeners who asked together share one batch
                deadline = time.monotonic() + self.batch_wait_s
                while len(self._pending) < self.batch_size and (left := deadline - time.monotonic()) > 0:
                    self._wake.wait(left)
                tickets = self._take(self.batch_size)
                self.batches += 1
                self.largest_batch = max(self.largest_batch, len(tickets))
            self._run_batch(tickets)

    def _run_batch(self, tickets: list[_Ticket]) -> None:
        active = {id(t.job): t for t in tickets}

        def more() -> list[Any]:
            with self._wake:
                live = sum(1 for t in active.values() if not t.done)
                joined = self._take(max(0, self.batch_size - live)) if not self._closed else []
                self.largest_batch = max(self.largest_batch, live + len(joined))
            for t in joined:
                active[id(t.job)] = t
            return [t.job for t in joined]

        try:
            for job, item, last in self.batch_fn([t.job for t in tickets], more):
                t = active[id(job)]
                if not t.done:
                    t.put("item", item)
                if last:
                    self._finish(t)
            for t in active.values():  # a job the batch never finished: its stream just ends
                self._finish(t)
        except BaseException as e:  # every job still in the batch hears it
            for t in active.values():
                self._finish(t, ("error", e))

    def shutdown(self) -> None:
        with self._wake:
            self._closed = True
            self._wake.notify_all()
        self._executor.shutdown(wait=False, cancel_futures=True)


BatchFn = Callable[[list[Any], Callable[[], list[Any]]], Iterable[tuple[Any, Any, bool]]]


class _Ticket:
    """A batched job and the event-loop queue its items go to."""

    def __init__(self, job: Any, loop: asyncio.AbstractEventLoop, items: asyncio.Queue) -> None:
        self.job, self.loop, self.items = job, loop, items
        self.done = False

    def put(self, kind: str, value: Any) -> None:
        try:
            self.loop.call_soon_threadsafe(self.items.put_nowait, (kind, value))
        except RuntimeError:  # event loop closed: nobody is listening any more
            if hasattr(self.job, "cancelled"):
                self.job.cancelled = True
