"""Threads for sync code: sync views, sync RPC handlers and the ORM.

Django runs each request's sync code in the request's own ``ThreadSensitiveContext``, so
that every ORM call of one request lands on one thread. It makes a new thread for each
request; a burst of requests then opens a burst of database connections, and a
connection kept by ``CONN_MAX_AGE`` dies with its thread.

Here every HTTP request and every RPC gets a :class:`Lease` instead: an executor that
borrows one long-lived thread from a bounded pool on its first use and gives it back when
the request ends. So:

- at most ``THREADS`` threads, hence at most ``THREADS`` connections per database alias;
- a request that runs no sync code and no ORM query never borrows a thread at all;
- connections persist across requests on their thread when ``CONN_MAX_AGE`` says so;
- the thread itself closes broken and expired connections before and after each request
  (Django's ``close_old_connections``), on the thread that owns them, without an extra
  hop through the event loop.
"""

from __future__ import annotations

import logging
import queue
import threading
from collections.abc import Callable
from concurrent.futures import Executor, Future
from typing import Any

from asgiref.sync import ThreadSensitiveContext

logger = logging.getLogger("hybridserver.error")

_RELEASE = object()


def _db_hygiene() -> None:
    # Imported late: the pool is built before Django may be set up in some tests.
    from django.db import close_old_connections, reset_queries

    reset_queries()
    close_old_connections()


class Lease(Executor):
    """Runs one request's sync calls, in order, on one pooled thread borrowed lazily."""

    __slots__ = ("_pool", "_queue", "_released", "_requested")

    def __init__(self, pool: ThreadPool) -> None:
        self._pool = pool
        self._queue: queue.SimpleQueue[Any] | None = None
        self._requested = False
        self._released = False

    @property
    def used(self) -> bool:
        """True once any sync call of this request has been submitted."""
        return self._requested

    def submit(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Future[Any]:
        if self._released:
            raise RuntimeError("this request has ended; its thread was given back")
        future: Future[Any] = Future()
        if not self._requested:
            self._requested = True
            self._queue = queue.SimpleQueue()
            self._pool._request(self)
        assert self._queue is not None
        self._queue.put((future, fn, args, kwargs))
        return future

    def release(self) -> None:
        """Give the thread back once the queued work is done. Never blocks."""
        if self._released:
            return
        self._released = True
        if self._queue is not None:
            self._queue.put(_RELEASE)

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        self.release()


class ThreadPool:
    """A bounded set of long-lived threads, each serving one lease at a time."""

    def __init__(self, max_threads: int, *, name: str = "hybridserver") -> None:
        self.max_threads = max_threads
        self._name = name
        self._waiting: queue.SimpleQueue[Lease | None] = queue.SimpleQueue()
        self._lock = threading.Lock()
        self._threads: list[threading.Thread] = []
        self._idle = 0
        self._closed = False

    @property
    def size(self) -> int:
        """Threads started so far."""
        return len(self._threads)

    def lease(self) -> Lease:
        return Lease(self)

    def request_context(self) -> RequestContext:
        """The ``ThreadSensitiveContext`` of one request or RPC, backed by a lease."""
        return RequestContext(self)

    def _request(self, lease: Lease) -> None:
        with self._lock:
            if self._closed:
                raise RuntimeError("the thread pool is shut down")
            if self._idle <= 0 and len(self._threads) < self.max_threads:
                thread = threading.Thread(
                    target=self._work, name=f"{self._name}-{len(self._threads)}", daemon=True
                )
                self._threads.append(thread)
                self._idle += 1
                thread.start()
            self._idle -= 1
        self._waiting.put(lease)

    def _work(self) -> None:
        while True:
            lease = self._waiting.get()
            if lease is None:
                break
            self._serve(lease)
            with self._lock:
                self._idle += 1
        _close_connections()

    def _serve(self, lease: Lease) -> None:
        assert lease._queue is not None
        _safely(_db_hygiene)
        while True:
            item = lease._queue.get()
            if item is _RELEASE:
                break
            future, fn, args, kwargs = item
            if not future.set_running_or_notify_cancel():
                continue
            try:
                result = fn(*args, **kwargs)
            except BaseException as exc:
                future.set_exception(exc)
                del future, exc
            else:
                future.set_result(result)
                del future, result
        _safely(_db_hygiene)

    def shutdown(self, timeout: float | None = None) -> None:
        """Stop the threads after the work already leased; close their connections."""
        with self._lock:
            self._closed = True
            threads = list(self._threads)
        for _ in threads:
            self._waiting.put(None)
        for thread in threads:
            thread.join(timeout)


class RequestContext:
    """``async with pool.request_context():`` runs one request's sync code on one thread.

    A class rather than ``@asynccontextmanager``: it wraps every request, and it must
    exit without suspending when a streaming handler is closed with ``GeneratorExit``.
    """

    __slots__ = ("_context", "lease")

    def __init__(self, pool: ThreadPool) -> None:
        self.lease = Lease(pool)
        self._context = ThreadSensitiveContext(executor=self.lease)

    async def __aenter__(self) -> Lease:
        await self._context.__aenter__()
        return self.lease

    async def __aexit__(self, *exc_info: Any) -> None:
        try:
            await self._context.__aexit__(*exc_info)
        finally:
            self.lease.release()


def _close_connections() -> None:
    def close() -> None:
        from django.db import connections

        connections.close_all()

    _safely(close)


def _safely(fn: Callable[[], None]) -> None:
    try:
        fn()
    except Exception:
        logger.exception("Database connection clean-up failed")
