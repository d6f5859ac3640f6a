"""A fair share of the one event loop for gRPC while HTTP keeps it busy.

Why it is needed: grpc.aio gets its work from the loop one step at a time. Its poller
thread hands completion-queue events to the loop through a socket, and it accepts RPCs
in one task that waits for the next call, starts it and asks for another; in practice an
RPC takes about four loop iterations, one after the other, however many RPCs the client
has in flight. uvicorn, on the other hand, starts work for every connection that has a
request in every iteration. With a hundred busy HTTP connections an iteration lasts a
millisecond or more, so gRPC falls to a few hundred RPCs a second, and its latency grows
with the number of RPCs waiting. BENCHMARKS.md has the measurements, and why grpc.aio
moves at that pace ("two limits in grpc.aio").

What it does: HTTP admission control driven by the length of a loop iteration, while
gRPC has work. While HTTP requests are in flight, a probe measures how long an iteration
takes (a short chain of ``call_soon`` callbacks, every 10 ms). When iterations are
longer than
``TARGET_HIGH``, the number of HTTP requests let into Django at once is cut (down to
``MIN_LIMIT``); when they are shorter than ``TARGET_LOW`` and requests are waiting, it
is raised again, one at a time. A request that waits does so before Django, holding no
thread and no database connection, in arrival order. So:

- an idle or I/O-bound loop has short iterations: no limit applies;
- a loop kept busy by HTTP alone is not limited either: no RPC has started and no
  stream has moved a message for ``GRPC_IDLE`` seconds, so there is nothing to make
  room for (:class:`GrpcActivity`);
- gRPC keeps enough iterations to make progress.

The limit has a floor in CPU time: while HTTP gets less than ``CPU_FLOOR`` of the
process's CPU time, its limit is not cut, and it grows by one a probe while requests
wait. Of what admission control sees, that is about half the core: the loop time of
the steps of each request's task and of the tasks it starts (Django runs its view in
one), plus the CPU time its sync calls use on their thread; uvicorn's own parsing and
writing is not seen. Iteration length alone lets HTTP keep a share that depends on the
host: how long an iteration lasts with a given number of requests in Django changes
with how fast the machine runs Python against system calls, and in the benchmark's
mixed load the same targets left HTTP with anything from 18% to 41% of its solo rate
from one host to the next. A share of the CPU is meant not to depend on that.

Admitting more requests cannot give HTTP a larger share, though, on a host where gRPC
takes the loop unaided (BENCHMARKS.md, eighth round): grpc.aio starts its next RPC as
soon as an iteration lets it, and a limit on RPCs in flight would hold nothing back,
since grpc.aio runs about one handler at a time while the rest wait inside gRPC core.
So, while HTTP is under its floor with requests waiting and iterations are long, RPCs
are paced (``GRPC_PACING``): each waits ``GrpcActivity.delay`` before its handler
runs, and each message a stream sends waits before it goes. The delay starts at
``PACE_START``, grows by ``PACE_GROW`` in each probe that finds HTTP short, up to
``PACE_MAX``, and shrinks by ``PACE_SHRINK`` in the others; it is dropped once HTTP has
nothing in flight. A paced RPC waits at most ``PACE_DEADLINE_SHARE`` of the time left
before its deadline. A client with a bounded number of RPCs in flight (a channel's
streams, a worker pool) then sends fewer per second, and the loop's iterations go to
HTTP's waiting requests. The two sides meet at the floor: admission control holds
HTTP down to it, pacing holds gRPC back until HTTP is up to it (ninth round).

A request stops counting toward the limit, so that requests that do not load the loop
cannot hold the door shut, once it has been in flight for ``EXPIRY`` seconds (a long
poll, a streamed response), or once it has spent ``IDLE`` seconds waiting on I/O:
either with no sync call of its own running or queued (an ``async def`` view awaiting
another service), or with one running whose thread has used less than ``IDLE_CPU``
seconds of CPU in that time (a sync view blocked on a slow query: it holds a thread
but neither the CPU nor the GIL). Its thread lease tells, see
:class:`hybridserver.threads.Lease`. WebSocket connections are not counted at all.
"""

from __future__ import annotations

import asyncio
import collections
import collections.abc
import contextvars
import time
from collections.abc import Callable, Coroutine
from typing import Any, Protocol

#: Loop iterations longer than this, on average, shrink the HTTP limit (seconds).
TARGET_HIGH = 140e-6
#: Shorter than this, with requests waiting, grow it.
TARGET_LOW = 90e-6
#: How often the loop is probed while HTTP requests are in flight (seconds).
PERIOD = 0.010
#: Iterations timed per probe.
SAMPLES = 8
#: Requests let in at once, at the least.
MIN_LIMIT = 1
#: Seconds after which a request no longer counts toward the limit.
EXPIRY = 0.25
#: Seconds waiting on I/O after which a request no longer counts.
IDLE = 0.020
#: A running sync call whose thread uses less CPU than this in ``IDLE`` is waiting on
#: I/O (seconds).
IDLE_CPU = 0.001
#: With no RPC started and no stream message for this long (seconds), gRPC is idle and
#: HTTP is not limited.
GRPC_IDLE = 0.25
#: While its requests wait, HTTP is not held under this share of the process's CPU
#: time, however long iterations are.
CPU_FLOOR = 0.43
#: Weight of one probe's HTTP CPU share in the running share.
SHARE_WEIGHT = 0.2
#: Pacing of gRPC while HTTP is held under its floor: the first delay (seconds), the
#: factor it grows by in each probe that finds HTTP short, the factor it shrinks by in
#: the others (below ``PACE_START`` it is dropped), and the most it can reach. The
#: most bounds what pacing adds to an RPC's latency: 50 ms held gRPC's p99 at 3.1-3.7x
#: its solo p99 in the mixed load where 200 ms gave 4.4-6.0x (BENCHMARKS.md, tenth
#: round), and where pacing was needed its delay had mostly stayed under 50 ms.
PACE_START = 0.002
PACE_GROW = 1.5
PACE_SHRINK = 0.8
PACE_MAX = 0.050
#: An RPC is never held for more than this part of the time left before its deadline.
PACE_DEADLINE_SHARE = 0.25

_UNLIMITED = 1 << 30


class Work(Protocol):
    """What a request's thread lease reports: sync calls submitted and completed (each
    counter written by one thread only), when the last one completed (monotonic), and
    the CPU-time clock of the thread that runs them (``None`` until it has one)."""

    submitted: int
    completed: int
    last_done: float
    clock: int | None
    cpu: float


class _Ticket:
    __slots__ = ("active", "admitted", "busy_at", "cpu_counted", "cpu_mark", "work")

    def __init__(self, admitted: float) -> None:
        self.admitted = admitted
        self.active = True
        #: The request's :class:`Work`, once known; without it the ticket never idles.
        self.work: Work | None = None
        # The CPU time of the request's thread when last seen to move, and when.
        self.cpu_mark: float | None = None
        self.busy_at = admitted
        # The part of ``work.cpu`` already added to HTTP's CPU time.
        self.cpu_counted = 0.0

    def idle(self, now: float) -> bool:
        """Whether the request has been waiting on I/O for ``IDLE`` seconds: no sync
        call running or queued, or one running without using the CPU."""
        since = now - IDLE
        work = self.work
        if work is None:
            return False
        if work.submitted == work.completed:
            return max(work.last_done, self.admitted) < since
        clock = work.clock
        if clock is None:  # queued for a thread, or no CPU clock on this platform
            return False
        try:
            cpu = time.clock_gettime(clock)
        except OSError:
            return False
        if self.cpu_mark is None or cpu - self.cpu_mark >= IDLE_CPU:
            self.cpu_mark = cpu
            self.busy_at = now
            return False
        return self.busy_at < since


class GrpcActivity:
    """What the gRPC side tells admission control, and how admission control paces it.

    ``progress`` goes up by one when an RPC's handler begins and for each message a
    stream sends or receives (:mod:`hybridserver.grpc.handlers`). Work is counted as it
    happens, not while an RPC lasts, so a stream left open and quiet (a health
    ``Watch``) does not hold HTTP back, and a busy one does not go unseen however long
    it lasts.

    ``delay`` is set by :class:`HttpAdmission`: while it is not zero, every RPC waits
    that long before its handler runs, and every message a stream sends waits before it
    goes (:meth:`pace`). Health checks and reflection are not paced."""

    __slots__ = ("delay", "progress")

    def __init__(self) -> None:
        self.progress = 0
        self.delay = 0.0

    async def pace(self, context: _Deadline) -> None:
        """Wait ``delay``, but never more than ``PACE_DEADLINE_SHARE`` of the time the
        RPC has left before its deadline. Call it only while ``delay`` is set."""
        delay = self.delay
        remaining = context.time_remaining()
        if remaining is not None:
            delay = min(delay, remaining * PACE_DEADLINE_SHARE)
        if delay > 0:
            await asyncio.sleep(delay)


class _Deadline(Protocol):
    def time_remaining(self) -> float | None: ...


class HttpAdmission:
    """``ticket = await admission.enter()`` before Django, ``admission.leave(ticket)``
    after. Create it inside the running loop, or let ``enter()`` find the loop.

    ``grpc``: the activity of the gRPC server sharing the loop; HTTP is limited only
    while gRPC keeps working. Without it, HTTP is limited whenever iterations are long.
    ``pacing``: set ``grpc.delay`` while HTTP is short of its floor (``GRPC_PACING``).
    """

    def __init__(self, grpc: GrpcActivity | None = None, *, pacing: bool = True) -> None:
        self.grpc = grpc
        self.pacing = pacing
        self._grpc_seen = -1
        self._grpc_seen_at = 0.0
        self.limit = _UNLIMITED
        self.in_flight = 0
        self._tickets: collections.deque[_Ticket] = collections.deque()
        self._waiters: collections.deque[asyncio.Future[None]] = collections.deque()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._probing = False
        self._ticks = 0
        self._probe_start = 0.0
        #: Seconds the loop spent in HTTP requests' tasks, and their threads' CPU time.
        self.http_loop = 0.0
        self.http_threads = 0.0
        #: HTTP's share of the process's CPU time, smoothed over the recent probes.
        self.cpu_share = 0.0
        self._share_mark = (0.0, 0.0)

    @property
    def waiting(self) -> int:
        return len(self._waiters)

    def timed(self, coro: Coroutine[Any, Any, Any]) -> Coroutine[Any, Any, Any]:
        """``coro``, with the loop time of each of its steps counted as HTTP's. Call it
        in the request's own task: it marks the task's context, so that the tasks the
        request starts are counted too (see :func:`install_task_factory`)."""
        _request_admission.set(self)
        return _Timed(coro, self)

    async def enter(self) -> _Ticket:
        """Wait for a turn; return the ticket to give back to :meth:`leave`."""
        if self._loop is None:
            self._loop = asyncio.get_running_loop()
        waiters = self._waiters
        while waiters and waiters[0].done():  # cancelled while waiting
            waiters.popleft()
        if self.in_flight >= self.limit or waiters:
            waiter = self._loop.create_future()
            self._waiters.append(waiter)
            try:
                await waiter
            except BaseException:
                if waiter.done() and not waiter.cancelled():
                    # Let in just as it was cancelled: pass the turn on.
                    self.in_flight -= 1
                    self._wake()
                raise
        else:
            self.in_flight += 1
        ticket = _Ticket(time.monotonic())
        self._tickets.append(ticket)
        if not self._probing:
            self._probing = True
            self._share_mark = self._cpu_now()
            self._loop.call_later(PERIOD, self._probe)
        return ticket

    def leave(self, ticket: _Ticket) -> None:
        self._count_threads(ticket)
        if ticket.active:
            ticket.active = False
            self.in_flight -= 1
            self._wake()

    def _count_threads(self, ticket: _Ticket) -> None:
        if ticket.work is not None:
            cpu = ticket.work.cpu
            self.http_threads += cpu - ticket.cpu_counted
            ticket.cpu_counted = cpu

    def _cpu_now(self) -> tuple[float, float]:
        return time.process_time(), self.http_loop + self.http_threads

    def _measure_share(self) -> None:
        for ticket in self._tickets:
            self._count_threads(ticket)
        then_total, then_http = self._share_mark
        self._share_mark = now_total, now_http = self._cpu_now()
        if now_total > then_total:
            share = min(1.0, (now_http - then_http) / (now_total - then_total))
            self.cpu_share += SHARE_WEIGHT * (share - self.cpu_share)

    def _wake(self) -> None:
        while self._waiters and self.in_flight < self.limit:
            waiter = self._waiters.popleft()
            if not waiter.done():
                self.in_flight += 1
                waiter.set_result(None)

    def _probe(self) -> None:
        self._expire()
        if self.in_flight == 0 and not self._waiters:
            self._probing = False
            self.limit = _UNLIMITED
            if self.grpc is not None:
                self.grpc.delay = 0.0
            return
        self._ticks = 0
        self._probe_start = time.perf_counter()
        assert self._loop is not None
        self._loop.call_soon(self._tick)

    def _tick(self) -> None:
        # Runs once per loop iteration: call_soon from a callback lands in the next one.
        self._ticks += 1
        if self._ticks < SAMPLES:
            assert self._loop is not None
            self._loop.call_soon(self._tick)
            return
        self._measure_share()
        self._adjust((time.perf_counter() - self._probe_start) / SAMPLES)
        assert self._loop is not None
        self._loop.call_later(PERIOD, self._probe)

    def _grpc_idle(self) -> bool:
        if self.grpc is None:
            return False
        now = time.monotonic()
        if self.grpc.progress != self._grpc_seen:
            self._grpc_seen = self.grpc.progress
            self._grpc_seen_at = now
        return now - self._grpc_seen_at >= GRPC_IDLE

    def _adjust(self, iteration: float) -> None:
        starved = self.cpu_share < CPU_FLOOR
        grpc_idle = self._grpc_idle()
        if grpc_idle:
            self.limit = _UNLIMITED
        elif iteration > TARGET_HIGH and not starved:
            self.limit = max(MIN_LIMIT, min(self.limit, self.in_flight) * 3 // 4)
        elif (iteration < TARGET_LOW or starved) and (
            self._waiters or self.in_flight >= self.limit
        ):
            self.limit = min(_UNLIMITED, self.limit + 1)
        if self.grpc is not None and self.pacing:
            self._pace(
                starved and bool(self._waiters) and iteration > TARGET_HIGH and not grpc_idle
            )
        self._wake()

    def _pace(self, short: bool) -> None:
        """Slow gRPC down while HTTP is ``short``: under its floor with requests waiting,
        the loop busy and gRPC at work; ease off otherwise. Raising HTTP's limit alone
        cannot give it more of the loop: grpc.aio takes its next RPC as soon as an
        iteration lets it."""
        assert self.grpc is not None
        delay = self.grpc.delay
        if short:
            self.grpc.delay = min(PACE_MAX, max(PACE_START, delay * PACE_GROW))
        elif delay:
            delay *= PACE_SHRINK
            self.grpc.delay = delay if delay >= PACE_START else 0.0

    def _expire(self) -> None:
        now = time.monotonic()
        deadline = now - EXPIRY
        tickets = self._tickets
        while tickets and (not tickets[0].active or tickets[0].admitted < deadline):
            self.leave(tickets.popleft())
        for ticket in list(tickets):
            if ticket.active and ticket.idle(now):
                self.leave(ticket)


_request_admission: contextvars.ContextVar[HttpAdmission | None] = contextvars.ContextVar(
    "hybridserver_http_admission", default=None
)


class _Timed(collections.abc.Coroutine):  # type: ignore[type-arg]
    """A coroutine that adds the time of each of its steps to ``http_loop``."""

    __slots__ = ("_admission", "_coro")

    def __init__(self, coro: Coroutine[Any, Any, Any], admission: HttpAdmission) -> None:
        self._coro = coro
        self._admission = admission

    def send(self, value: Any) -> Any:
        start = time.perf_counter()
        try:
            return self._coro.send(value)
        finally:
            self._admission.http_loop += time.perf_counter() - start

    def throw(self, *args: Any) -> Any:
        start = time.perf_counter()
        try:
            return self._coro.throw(*args)
        finally:
            self._admission.http_loop += time.perf_counter() - start

    def close(self) -> None:
        self._coro.close()

    def __await__(self) -> Any:
        return self

    def __iter__(self) -> Any:
        return self

    def __next__(self) -> Any:
        return self.send(None)


def install_task_factory(loop: asyncio.AbstractEventLoop) -> Callable[[], None]:
    """Count the loop time of every task that an HTTP request starts (Django runs its
    view in one) as HTTP's, through the loop's task factory; a factory already set
    still makes the tasks. Returns what puts the previous factory back."""
    previous = loop.get_task_factory()

    def factory(
        loop: asyncio.AbstractEventLoop,
        coro: Coroutine[Any, Any, Any],
        *,
        context: contextvars.Context | None = None,
        **kwargs: Any,
    ) -> asyncio.Future[Any]:
        if context is None:
            admission = _request_admission.get()
        else:
            admission = context.get(_request_admission)
        if admission is not None:
            coro = _Timed(coro, admission)
        if previous is not None:
            return previous(loop, coro, context=context, **kwargs)
        return asyncio.Task(coro, loop=loop, context=context, **kwargs)

    def uninstall() -> None:
        if loop.get_task_factory() is factory:
            loop.set_task_factory(previous)

    loop.set_task_factory(factory)
    return uninstall
