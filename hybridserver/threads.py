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

Every sync call is a hop from the loop to a thread and back, and a Django request makes a
dozen (each sync middleware, each ORM call), so a hop is kept cheap: a call submitted from
the event loop gets an ``asyncio.Future`` that the thread resolves with one
``call_soon_threadsafe``, rather than a ``concurrent.futures.Future`` (a lock and a
condition each) that ``run_in_executor`` would then chain to an asyncio one.

On Linux the pool's threads run under ``SCHED_BATCH`` (:func:`_yield_on_wake`): the
same share of the CPU, but a thread woken by a hop does not preempt the thread that is
running, usually the event loop holding the GIL. Without it, a woken thread preempts the
loop, finds the GIL taken, and sleeps again: two wasted context switches, many times per
request when the server has one core. An operator's own policy (``chrt``) is kept.
"""

from __future__ import annotations

import asyncio
import contextvars
import logging
import os
import queue
import threading
import time
from collections.abc import Callable
from concurrent.futures import Executor, Future
from typing import Any

from asgiref.sync import AsyncToSync, SyncToAsync, ThreadSensitiveContext

logger = logging.getLogger("hybridserver.error")

_RELEASE = object()


def _db_hygiene() -> None:
    # Imported late: the pool is built before Django may be set up in some tests.
    from django.db import close_old_connections, reset_queries

    reset_queries()
    close_old_connections()


class Lease(Executor):
    """Runs one request's sync calls, in order, on one pooled thread borrowed lazily."""

    __slots__ = (
        "_pool",
        "_queue",
        "_released",
        "_requested",
        "clock",
        "completed",
        "cpu",
        "last_done",
        "submitted",
    )

    def __init__(self, pool: ThreadPool) -> None:
        self._pool = pool
        self._queue: queue.SimpleQueue[Any] | None = None
        self._requested = False
        self._released = False
        # What admission control reads (hybridserver.fairness.Work): calls submitted
        # (counted where they are submitted, the loop) and completed (counted by the
        # leased thread), when the last one completed, the CPU-time clock of the
        # leased thread (set by that thread when it takes the lease), and the CPU time
        # the lease's calls have used on it so far (written by that thread).
        self.submitted = 0
        self.completed = 0
        self.last_done = 0.0
        self.clock: int | None = None
        self.cpu = 0.0

    def submit(
        self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any
    ) -> Future[Any] | asyncio.Future[Any]:
        """Queue ``fn``. From the event loop (``run_in_executor``, which is how asgiref
        calls it) the result is an ``asyncio.Future`` of that loop; from anywhere else,
        a ``concurrent.futures.Future``."""
        if self._released:
            raise RuntimeError("this request has ended; its thread was given back")
        future: Future[Any] | asyncio.Future[Any]
        try:
            future = asyncio.get_running_loop().create_future()
        except RuntimeError:
            future = Future()
        if not self._requested:
            self._requested = True
            self._queue = queue.SimpleQueue()
            self._pool._request(self)
        assert self._queue is not None
        self.submitted += 1
        self._queue.put((future, fn, args, kwargs))
        return future

    async def run_last(self, fn: Callable[..., Any], /, *args: Any) -> Any:
        """``await sync_to_async(fn)(*args)`` for the request's last sync call: after
        it, the lease takes no more calls. ``fn`` runs on the leased thread, in a copy
        of the caller's context, and an ``async_to_sync`` in it runs on this loop.

        The thread goes back to the pool as soon as ``fn`` returns, rather than
        sleeping until the request ends and being woken to give it back; with requests
        queued for a thread, it takes the next at once. And, with nothing of the request
        left to see them, what ``fn`` sets in context variables is not carried back to
        the caller, as ``sync_to_async`` does with two passes over all of them; nor is
        the call shielded: cancelling it cancels the task an ``async_to_sync`` in ``fn``
        is running, and stops waiting for ``fn``. Together that took a fifth to a quarter
        off the CPU time of a plain ``def`` RPC on one core, and a third of its context
        switches or more (BENCHMARKS.md, tenth round)."""
        task_context: list[asyncio.Task[Any]] = []
        future = self.submit(
            _on_thread,
            asyncio.get_running_loop(),
            task_context,
            contextvars.copy_context(),
            fn,
            args,
        )
        self.release()
        try:
            return await future
        except asyncio.CancelledError:
            for task in task_context:
                task.cancel()
            raise

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
        _yield_on_wake()
        clock = _cpu_clock()
        while True:
            lease = self._waiting.get()
            if lease is None:
                break
            lease.clock = clock
            self._serve(lease)
            with self._lock:
                self._idle += 1
        _close_connections()

    def _serve(self, lease: Lease) -> None:
        assert lease._queue is not None
        start = time.thread_time()

        def count_cpu() -> None:
            # Before the result is handed over: once it is, the request may end and
            # admission control read the lease for the last time.
            lease.cpu = time.thread_time() - start

        _safely(_db_hygiene)
        while True:
            item = lease._queue.get()
            if item is _RELEASE:
                break
            future, fn, args, kwargs = item
            if isinstance(future, asyncio.Future):
                _run_for_loop(future, fn, args, kwargs, count_cpu)
            elif future.set_running_or_notify_cancel():
                try:
                    result = fn(*args, **kwargs)
                except BaseException as exc:
                    count_cpu()
                    future.set_exception(exc)
                    del exc
                else:
                    count_cpu()
                    future.set_result(result)
                    del result
            del future
            lease.last_done = time.monotonic()
            lease.completed += 1
        _safely(_db_hygiene)

    def shutdown(self, timeout: float | None = None) -> None:
        """Stop the threads after the work already leased; close their connections."""
        with self._lock:
            self._closed = True
            threads = list(self._threads)
        for _ in threads:
            self._waiting.put(None)
        # One deadline for all: a thread stuck in a cancelled request's sync code must
        # not add its own timeout to the others'.
        deadline = None if timeout is None else time.monotonic() + timeout
        for thread in threads:
            thread.join(None if deadline is None else max(0.0, deadline - time.monotonic()))


def _on_thread(
    loop: asyncio.AbstractEventLoop,
    task_context: list[asyncio.Task[Any]],
    context: contextvars.Context,
    fn: Callable[..., Any],
    args: tuple[Any, ...],
) -> Any:
    # What asgiref's SyncToAsync.thread_handler sets for an async_to_sync inside fn:
    # the loop to run its coroutine on, and where to put the task that runs it.
    local = SyncToAsync.threadlocal
    local.main_event_loop = loop
    local.main_event_loop_pid = os.getpid()
    local.task_context = task_context
    return context.run(fn, *args)


def _yield_on_wake() -> None:
    """Run the calling thread under ``SCHED_BATCH`` if it runs under the default policy
    (``SCHED_OTHER``): a woken thread waits for the running one's time slice to end
    rather than preempting it. Same weight, same nice value; Linux only."""
    batch = getattr(os, "SCHED_BATCH", None)
    if batch is None:
        return
    try:
        if os.sched_getscheduler(0) == os.SCHED_OTHER:  # 0: the calling thread
            os.sched_setscheduler(0, batch, os.sched_param(0))
    except OSError:
        pass  # not allowed here (a seccomp profile): the default policy stays


def _cpu_clock() -> int | None:
    """The CPU-time clock of the calling thread, where the platform has one."""
    try:
        return time.pthread_getcpuclockid(threading.get_ident())
    except (AttributeError, OSError):
        return None


def _run_for_loop(
    future: asyncio.Future[Any],
    fn: Callable[..., Any],
    args: Any,
    kwargs: Any,
    finished: Callable[[], None],
) -> None:
    """Run ``fn`` on this thread, call ``finished()``, and resolve ``future`` on its
    loop."""
    if future.cancelled():  # a plain read; the loop thread alone changes it
        return
    try:
        result = fn(*args, **kwargs)
    except BaseException as exc:
        finished()
        _resolve(future, future.set_exception, exc)
        del exc
    else:
        finished()
        _resolve(future, future.set_result, result)
        del result


def _resolve(future: asyncio.Future[Any], setter: Callable[[Any], None], value: Any) -> None:
    try:
        future.get_loop().call_soon_threadsafe(_set_unless_done, future, setter, value)
    except RuntimeError:
        pass  # the loop is closed: nobody is waiting any more


def _set_unless_done(
    future: asyncio.Future[Any], setter: Callable[[Any], None], value: Any
) -> None:
    if not future.done():
        setter(value)


def _inherited_executor() -> Any:
    return getattr(AsyncToSync.executors, "current", None)


#: True in the contexts :func:`prime_context` primed, and in every task copied from them.
_PRIMED: contextvars.ContextVar[bool] = contextvars.ContextVar("hybridserver.primed")


def prime_context() -> None:
    """Give the current context an explicit "no enclosing ``async_to_sync``".

    asgiref reads ``AsyncToSync.executors.current`` on every ``sync_to_async`` call,
    always as ``getattr(..., None)``. When the attribute is missing, the ``Local`` builds
    and raises an ``AttributeError`` each time, which makes the read several times
    slower. Called once in the context that the server's connections and tasks are
    created from, it sets the attribute to the value asgiref already takes it to have,
    so that every request and RPC reads it cheaply; and it marks the context, so that
    entering a request's context need not read it at all (see
    :meth:`RequestContext.enter`).
    """
    if _inherited_executor() is None:
        AsyncToSync.executors.current = None
        _PRIMED.set(True)


def _fast_context_supported() -> bool:
    """Whether asgiref's ThreadSensitiveContext is the implementation RequestContext
    knows (it reads and writes the same private attributes); if not, use asgiref's."""
    probe = ThreadSensitiveContext(executor=_NO_EXECUTOR)
    return all(
        hasattr(probe, name) for name in ("token", "_executor", "_old_executor", "_exited")
    ) and hasattr(SyncToAsync, "context_to_thread_executor")


class _NoExecutor(Executor):
    pass


_NO_EXECUTOR = _NoExecutor()
_FAST = _fast_context_supported()


class RequestContext(ThreadSensitiveContext):
    """``async with pool.request_context():`` runs one request's sync code on one thread.

    asgiref's ``ThreadSensitiveContext(executor=lease)``, entered for every request and
    RPC, with a cheaper way in and out. asgiref's own ``__aenter__`` also hides, and
    ``__aexit__`` restores, the executor of an enclosing ``async_to_sync`` call
    (``AsyncToSync.executors.current``), through an ``asgiref.local.Local``: a locked
    read and two locked copy-on-write updates that cost more than the rest of entering
    and leaving together. A request the server started has no such executor (its
    context is primed, :func:`prime_context`), so there is nothing to hide or to look
    up. (Should code that an ``async_to_sync`` call runs from inside such a request
    enter a request context, its sync calls keep to that call's waiting thread, as
    in asgiref's contexts without an executor.) Elsewhere, or with an asgiref this
    module does not know, asgiref's own methods run. Entering and leaving never
    suspend: a streaming handler closed with ``GeneratorExit`` must be able to leave.
    """

    def __init__(self, pool: ThreadPool) -> None:
        self.lease = Lease(pool)
        super().__init__(executor=self.lease)

    def enter(self) -> bool:
        """Enter without suspending; False (nothing entered) if ``__aenter__`` must."""
        if (
            not _FAST
            or self.token is not None
            or self._exited
            or not (_PRIMED.get(False) or _inherited_executor() is None)
        ):
            return False
        self.token = SyncToAsync.thread_sensitive_context.set(self)
        SyncToAsync.context_to_thread_executor[self] = self.lease
        return True

    def leave(self) -> bool:
        """Leave what :meth:`enter` entered; False if ``__aenter__`` entered it."""
        if self._old_executor is not None or self.token is None:
            return False
        SyncToAsync.context_to_thread_executor.pop(self, None)
        SyncToAsync.thread_sensitive_context.reset(self.token)
        self.token = None
        self._exited = True
        return True

    async def __aenter__(self) -> Lease:  # type: ignore[override]
        if not self.enter():
            await super().__aenter__()
        return self.lease

    async def __aexit__(self, *exc_info: Any) -> None:
        try:
            if not self.leave():
                await super().__aexit__(*exc_info)
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
