"""Bounded work queue that runs model calls off the event loop.

``q = WorkQueue(max_concurrency=2, max_queue=32)``; ``await q.run(fn, *args)`` runs ``fn``
in one of ``max_concurrency`` worker threads; ``q.stream(factory)`` runs a generator in a
worker and yields its items asynchronously. At most ``max_concurrency + max_queue``
requests are admitted at once; the next raises ``Busy`` immediately (the API answers 429)
instead of piling up, so the event loop, ``/health`` and static files stay responsive.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator, Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

T = TypeVar("T")


class Busy(Exception):
    """Raised when the queue is full; carries how many requests are in flight."""


class WorkQueue:
    """A thread pool with admission control: ``WorkQueue(max_concurrency, max_queue)``."""

    def __init__(self, max_concurrency: int = 2, max_queue: int = 32, timeout_s: float = 300.0) -> None:
        if max_concurrency < 1:
            raise ValueError("max_concurrency must be at least 1")
        if max_queue < 0:
            raise ValueError("max_queue must not be negative")
        self.max_concurrency = max_concurrency
        self.max_queue = max_queue
        self.timeout_s = timeout_s
        self._executor = ThreadPoolExecutor(max_concurrency, thread_name_prefix="talkplay-gen")
        self._lock = threading.Lock()
        self._admitted = 0  # running + waiting
        self._running = 0
        self.completed = 0
        self.rejected = 0

    @property
    def capacity(self) -> int:
        return self.max_concurrency + self.max_queue

    def stats(self) -> dict[str, int]:
        with self._lock:
            return {"running": self._running, "waiting": self._admitted - self._running,
                    "max_concurrency": self.max_concurrency, "max_queue": self.max_queue,
                    "completed": self.completed, "rejected": self.rejected}

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
                while True:
                    kind, value = await asyncio.wait_for(items.get(), self.timeout_s)
                    if kind == "end":
                        return
                    if kind == "error":
                        raise value
                    yield value
            finally:
                stop.set()

        return consume()

    def shutdown(self) -> None:
        self._executor.shutdown(wait=False, cancel_futures=True)
