"""HTTP admission control (``hybridserver.fairness``): no limit while the loop is idle or
gRPC is, first come first served once there is one, and slow requests, or requests
waiting on I/O, stop counting."""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
from collections.abc import AsyncIterator
from typing import Any

import grpc
import httpx
import pytest
from django.test import override_settings
from grpc_health.v1 import health_pb2, health_pb2_grpc

from hybridserver import fairness
from hybridserver.fairness import GrpcActivity, HttpAdmission
from hybridserver.testing import LiveServer
from hybridserver.threads import Lease, ThreadPool
from project.catalog.grpc_gen.catalog.v1 import catalog_pb2, catalog_pb2_grpc
from tests.conftest import SESSION_POSTGRES, method
from tests.urls import use_cpu


@pytest.fixture(autouse=True)
def no_probe(monkeypatch: pytest.MonkeyPatch) -> None:
    """The tests adjust the limit themselves: keep the loop probe out of the way."""
    monkeypatch.setattr(fairness, "PERIOD", 3600.0)


@contextlib.asynccontextmanager
async def _live_admission() -> AsyncIterator[tuple[HttpAdmission, httpx.AsyncClient]]:
    """A live server with loop fairness on and the tests' views: its admission control,
    and a client."""
    with override_settings(ROOT_URLCONF="tests.urls"):
        async with (
            LiveServer("project.asgi", loop_fairness=True) as live,
            httpx.AsyncClient(base_url=live.http_url, timeout=30) as http,
        ):
            assert live.app.admission is not None
            yield live.app.admission, http


async def test_an_idle_loop_lets_every_request_in() -> None:
    admission = HttpAdmission()
    tickets = [await admission.enter() for _ in range(50)]
    assert admission.in_flight == 50
    assert admission.waiting == 0
    for ticket in tickets:
        admission.leave(ticket)
    assert admission.in_flight == 0


async def test_long_iterations_cut_the_limit_and_requests_wait_in_order() -> None:
    admission = HttpAdmission()
    admission.cpu_share = 1.0  # HTTP has its share of the CPU and more
    first = await admission.enter()
    second = await admission.enter()
    admission._adjust(iteration=10 * fairness.TARGET_HIGH)
    assert admission.limit == fairness.MIN_LIMIT

    order: list[str] = []

    async def request(name: str) -> None:
        ticket = await admission.enter()
        order.append(name)
        admission.leave(ticket)

    waiting = [asyncio.create_task(request(name)) for name in ("a", "b", "c")]
    await asyncio.sleep(0)
    assert admission.waiting == 3 and order == []
    admission.leave(first)
    await asyncio.sleep(0)
    assert order == []  # still one in flight, the limit is one
    admission.leave(second)
    await asyncio.gather(*waiting)
    assert order == ["a", "b", "c"]
    assert admission.in_flight == 0


async def test_short_iterations_raise_the_limit_while_requests_wait() -> None:
    admission = HttpAdmission()
    admission.limit = 1
    ticket = await admission.enter()
    waiter = asyncio.create_task(admission.enter())
    await asyncio.sleep(0)
    admission._adjust(iteration=fairness.TARGET_LOW / 2)
    assert admission.limit == 2
    admission.leave(await waiter)
    admission.leave(ticket)


async def test_http_under_its_cpu_floor_is_not_cut_and_grows_while_requests_wait() -> None:
    admission = HttpAdmission()
    tickets = [await admission.enter() for _ in range(4)]
    admission.cpu_share = 1.0
    admission._adjust(iteration=10 * fairness.TARGET_HIGH)
    assert admission.limit == 3
    waiter = asyncio.create_task(admission.enter())
    await asyncio.sleep(0)
    # Iterations as long as before, but HTTP has fallen under its floor of the CPU: it
    # is not cut further but raised, one at a time, until the request that waits is in.
    admission.cpu_share = fairness.CPU_FLOOR / 2
    admission._adjust(iteration=10 * fairness.TARGET_HIGH)
    assert admission.limit == 4 and not waiter.done()
    admission._adjust(iteration=10 * fairness.TARGET_HIGH)
    assert admission.limit == 5
    tickets.append(await asyncio.wait_for(waiter, 1))
    # Back over the floor: long iterations cut it again.
    admission.cpu_share = 1.0
    admission._adjust(iteration=10 * fairness.TARGET_HIGH)
    assert admission.limit == 3
    for ticket in tickets:
        admission.leave(ticket)


async def test_the_loop_time_of_a_request_and_of_its_tasks_counts_as_http() -> None:
    admission = HttpAdmission()
    fairness.install_task_factory(asyncio.get_running_loop())
    try:

        async def view() -> None:
            use_cpu(0.02)
            await asyncio.sleep(0)
            use_cpu(0.02)

        async def request() -> None:
            await asyncio.create_task(view())  # as Django runs the view: a task of its own
            use_cpu(0.02)

        async def handle() -> None:  # the request's own task, as uvicorn starts it
            await admission.timed(request())

        await asyncio.create_task(handle())
        counted = admission.http_loop
        assert 0.06 <= counted < 0.5
        # A task started outside any request does not count.
        await asyncio.create_task(view())
        assert admission.http_loop == counted
    finally:
        asyncio.get_running_loop().set_task_factory(None)


async def test_the_factory_keeps_a_task_factory_already_set() -> None:
    loop = asyncio.get_running_loop()
    made: list[object] = []

    def own(loop: asyncio.AbstractEventLoop, coro: Any, **kwargs: Any) -> asyncio.Task[Any]:
        task = asyncio.Task(coro, loop=loop, **kwargs)
        made.append(task)
        return task

    loop.set_task_factory(own)
    try:
        fairness.install_task_factory(loop)
        assert await asyncio.create_task(asyncio.sleep(0, "done")) == "done"
        assert len(made) == 1
    finally:
        loop.set_task_factory(None)


async def test_a_requests_thread_cpu_counts_as_http() -> None:
    pool = ThreadPool(2)
    admission = HttpAdmission()
    try:
        ticket = await admission.enter()
        async with pool.request_context() as lease:
            ticket.work = lease
            await asyncio.get_running_loop().run_in_executor(lease, use_cpu, 0.05)
        admission.leave(ticket)
        assert 0.05 <= admission.http_threads < 0.5
        # Counted once, however often it is looked at.
        admission.leave(ticket)
        assert admission.http_threads == lease.cpu
    finally:
        await asyncio.to_thread(pool.shutdown, 5)


async def test_a_cancelled_waiter_gives_up_its_place() -> None:
    admission = HttpAdmission()
    admission.limit = 1
    ticket = await admission.enter()
    waiter = asyncio.create_task(admission.enter())
    await asyncio.sleep(0)
    waiter.cancel()
    await asyncio.gather(waiter, return_exceptions=True)
    admission.leave(ticket)
    assert admission.in_flight == 0
    admission.leave(await admission.enter())
    assert admission.in_flight == 0


async def test_a_slow_request_stops_counting(monkeypatch: pytest.MonkeyPatch) -> None:
    admission = HttpAdmission()
    admission.limit = 1
    slow = await admission.enter()
    waiter = asyncio.create_task(admission.enter())
    await asyncio.sleep(0)
    assert not waiter.done()
    monkeypatch.setattr(fairness, "EXPIRY", 0.0)
    admission._expire()
    admitted = await asyncio.wait_for(waiter, 1)
    admission.leave(slow)  # finishing late does not count twice
    assert admission.in_flight == 1
    admission.leave(admitted)
    assert admission.in_flight == 0


@contextlib.asynccontextmanager
async def a_request_and_a_waiter() -> AsyncIterator[
    tuple[HttpAdmission, Any, Lease, asyncio.Task[Any]]
]:
    """A request in flight under a limit of 1, with its thread lease as its work, and a
    second request waiting for its turn."""
    pool = ThreadPool(1)
    admission = HttpAdmission()
    admission.limit = 1
    ticket = await admission.enter()
    context = pool.request_context()
    ticket.work = context.lease
    waiter = asyncio.create_task(admission.enter())
    await asyncio.sleep(0)
    try:
        yield admission, ticket, context.lease, waiter
    finally:
        context.lease.release()
        pool.shutdown(10)


async def test_a_request_waiting_on_io_stops_counting(monkeypatch: pytest.MonkeyPatch) -> None:
    async with a_request_and_a_waiter() as (admission, ticket, lease, waiter):
        monkeypatch.setattr(fairness, "EXPIRY", 3600.0)
        monkeypatch.setattr(fairness, "IDLE", 0.0)

        # A sync call of its own is running on its thread and using the CPU: the request
        # is working, however often the probe looks.
        running, finish = threading.Event(), threading.Event()

        def burn() -> None:
            running.set()
            while not finish.is_set():
                sum(range(1000))

        call = asyncio.get_running_loop().run_in_executor(lease, burn)
        assert await asyncio.to_thread(running.wait, 10)
        for _ in range(5):
            await asyncio.to_thread(time.sleep, 0.02)  # the thread gets 20 ms of CPU
            admission._expire()
            assert not waiter.done()
        finish.set()
        await call
        # The call is done: still counting until IDLE has passed without another one.
        monkeypatch.setattr(fairness, "IDLE", 3600.0)
        admission._expire()
        assert not waiter.done()
        monkeypatch.setattr(fairness, "IDLE", 0.0)
        admission._expire()
        admitted = await asyncio.wait_for(waiter, 1)
        admission.leave(ticket)  # finishing late does not count twice
        assert admission.in_flight == 1
        admission.leave(admitted)


async def test_a_sync_call_blocked_on_io_stops_counting(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    async with a_request_and_a_waiter() as (admission, ticket, lease, waiter):
        monkeypatch.setattr(fairness, "EXPIRY", 3600.0)

        # The call is running but blocked (a slow query, say): its thread uses no CPU.
        blocked, finish = threading.Event(), threading.Event()

        def wait() -> None:
            blocked.set()
            finish.wait(10)

        call = asyncio.get_running_loop().run_in_executor(lease, wait)
        assert await asyncio.to_thread(blocked.wait, 10)
        # Not for IDLE yet: still counting.
        monkeypatch.setattr(fairness, "IDLE", 3600.0)
        for _ in range(3):
            admission._expire()
            await asyncio.sleep(0.005)
        assert not waiter.done()
        # Blocked for longer than IDLE: it stops counting, and the next request is let in.
        monkeypatch.setattr(fairness, "IDLE", 0.0)
        admission._expire()
        admitted = await asyncio.wait_for(waiter, 1)
        assert not call.done()
        finish.set()
        await call
        admission.leave(ticket)
        assert admission.in_flight == 1
        admission.leave(admitted)


@pytest.mark.parametrize(
    "view, seconds",
    # The sync view's thread cannot be cancelled: it sleeps out its time at shutdown.
    [
        pytest.param("/slow/", 20, id="async"),
        pytest.param("/slow-sync/", 2, id="sync"),
        pytest.param("/slow-query/", 2, marks=pytest.mark.postgres, id="query"),
    ],
)
async def test_a_view_waiting_on_io_lets_the_next_request_in(
    monkeypatch: pytest.MonkeyPatch, view: str, seconds: float
) -> None:
    if view == "/slow-query/" and SESSION_POSTGRES is None:
        pytest.skip("waits on pg_sleep: needs the PostgreSQL run (scripts/test runs it there)")
    # Only the I/O wait can let the second request in: age does not expire the first.
    monkeypatch.setattr(fairness, "EXPIRY", 3600.0)
    async with _live_admission() as (admission, http):
        admission.limit = 1  # as when HTTP keeps the loop busy while RPCs arrive
        sleeping = asyncio.create_task(http.get(view, params={"s": seconds}))
        deadline = time.monotonic() + 10
        while admission.in_flight == 0 and time.monotonic() < deadline:
            await asyncio.sleep(0.005)
        assert admission.in_flight == 1, "the sleeping request was not let in"
        quick = asyncio.create_task(http.get(view, params={"s": 0}))
        while not quick.done() and time.monotonic() < deadline:
            admission._expire()  # what the loop probe does every PERIOD
            await asyncio.sleep(0.005)
        assert quick.done(), "the quick request was not let in"
        assert (await quick).text == "slept 0.0"
        assert not sleeping.done()  # it was let in while the first one still waited
        sleeping.cancel()
        await asyncio.gather(sleeping, return_exceptions=True)


async def test_a_live_requests_cpu_is_counted_where_it_is_used() -> None:
    loop = asyncio.get_running_loop()
    assert loop.get_task_factory() is None
    async with _live_admission() as (admission, http):

        async def spin(path: str) -> tuple[float, float]:
            """The loop and thread time counted for one request to ``path``."""
            before = admission.http_loop, admission.http_threads
            assert (await http.get(path, params={"ms": 50})).text == "spun 50.0"
            # The response reaches the client a few steps before the request leaves.
            deadline = time.monotonic() + 10
            while admission.in_flight and time.monotonic() < deadline:
                await asyncio.sleep(0.001)
            assert admission.in_flight == 0
            return admission.http_loop - before[0], admission.http_threads - before[1]

        # An async view: Django runs it in a task of the request's own, on the loop.
        on_loop, on_threads = await spin("/spin/")
        assert on_loop >= 0.05 and on_threads < 0.05
        # A sync view: on the request's thread.
        on_loop, on_threads = await spin("/spin-sync/")
        assert on_threads >= 0.05 and on_loop < 0.05
        assert loop.get_task_factory() is not None
    # Stopped: the loop's task factory is the one it had.
    assert loop.get_task_factory() is None


async def test_http_alone_is_not_limited(monkeypatch: pytest.MonkeyPatch) -> None:
    activity = GrpcActivity()
    admission = HttpAdmission(activity)
    admission.cpu_share = 1.0
    tickets = [await admission.enter() for _ in range(8)]
    # Long iterations while RPCs are starting: HTTP makes room.
    admission._adjust(iteration=10 * fairness.TARGET_HIGH)
    assert admission.limit == 6
    waiting = asyncio.create_task(admission.enter())
    await asyncio.sleep(0)
    assert not waiting.done()
    # No RPC started for GRPC_IDLE: the same long iterations no longer limit HTTP, and
    # the request that waited is let in.
    monkeypatch.setattr(fairness, "GRPC_IDLE", 0.0)
    admission._adjust(iteration=10 * fairness.TARGET_HIGH)
    assert admission.limit > 1000
    tickets.append(await asyncio.wait_for(waiting, 1))
    # An RPC starts: the limit comes back at the next long iteration.
    monkeypatch.setattr(fairness, "GRPC_IDLE", 3600.0)
    activity.progress += 1
    admission._adjust(iteration=10 * fairness.TARGET_HIGH)
    assert admission.limit == 9 * 3 // 4
    for ticket in tickets:
        admission.leave(ticket)


async def test_every_rpc_start_is_counted() -> None:
    async with LiveServer("project.asgi", loop_fairness=True) as live:
        activity = live.app.admission.grpc
        assert activity is not None
        before = activity.progress
        async with grpc.aio.insecure_channel(live.grpc_target) as channel:
            books = catalog_pb2_grpc.BookServiceStub(channel)
            for _ in range(3):
                # Without a key: refused, but started all the same.
                with pytest.raises(grpc.aio.AioRpcError):
                    await books.GetBook(catalog_pb2.GetBookRequest(id=1))
        assert activity.progress == before + 3


@pytest.mark.parametrize(
    ("name", "kind"),
    [
        ("ServerStream", "server"),  # async generator
        ("ServerStreamWrites", "server"),  # async def, context.write()
        ("ServerStreamSync", "server"),
        ("ClientStream", "client"),
        ("ClientStreamSync", "client"),
        ("Bidi", "bidi"),
        ("BidiSync", "bidi"),
    ],
)
async def test_every_stream_message_is_counted(name: str, kind: str) -> None:
    """A long stream is gRPC work as much as many short RPCs: with only RPC starts
    counted, HTTP load starved a busy stream (see BENCHMARKS.md, "mixed, gRPC server
    streams")."""
    async with LiveServer("project.asgi", loop_fairness=True) as live:
        activity = live.app.admission.grpc
        assert activity is not None
        before = activity.progress
        async with grpc.aio.insecure_channel(live.grpc_target) as channel:
            if kind == "server":
                responses = channel.unary_stream(method(name))(b"4")
                assert len([message async for message in responses]) == 4
            elif kind == "client":
                assert await channel.stream_unary(method(name))(iter([b"a"] * 4)) == b"a,a,a,a"
            else:
                responses = channel.stream_stream(method(name))(iter([b"a"] * 4))
                assert len([message async for message in responses]) == 4
        # One for the RPC's start, one for each message that went either way.
        messages = {"server": 4, "client": 4, "bidi": 8}[kind]
        assert activity.progress == before + 1 + messages


@contextlib.asynccontextmanager
async def _short_of_its_floor() -> AsyncIterator[tuple[HttpAdmission, GrpcActivity]]:
    """Admission control with gRPC busy, HTTP under its floor of the CPU, one request
    in and twenty waiting (each ``_adjust`` that raises the limit lets one more in)."""
    activity = GrpcActivity()
    admission = HttpAdmission(activity)
    admission.limit = 1
    admission.cpu_share = fairness.CPU_FLOOR / 2
    first = await admission.enter()
    waiting = [asyncio.create_task(admission.enter()) for _ in range(20)]
    await asyncio.sleep(0)
    yield admission, activity
    for task in waiting:
        task.cancel()
    admission.leave(first)


async def test_http_short_of_its_floor_paces_grpc_more_each_probe() -> None:
    long = 10 * fairness.TARGET_HIGH
    async with _short_of_its_floor() as (admission, activity):
        admission._adjust(iteration=long)
        assert activity.delay == fairness.PACE_START
        admission._adjust(iteration=long)
        assert activity.delay == pytest.approx(fairness.PACE_START * fairness.PACE_GROW)
        for _ in range(15):
            admission._adjust(iteration=long)
        assert activity.delay == fairness.PACE_MAX
        # Short iterations: the loop has room, HTTP's waiters are let in by its limit.
        admission._adjust(iteration=fairness.TARGET_LOW / 2)
        assert activity.delay == pytest.approx(fairness.PACE_MAX * fairness.PACE_SHRINK)
        # Over its floor again: the pace eases off each probe, and is dropped once small.
        admission.cpu_share = 1.0
        for _ in range(30):
            admission._adjust(iteration=long)
        assert activity.delay == 0.0


async def test_light_http_or_idle_grpc_sets_no_pace(monkeypatch: pytest.MonkeyPatch) -> None:
    long = 10 * fairness.TARGET_HIGH
    activity = GrpcActivity()
    admission = HttpAdmission(activity)
    admission.cpu_share = 0.0
    ticket = await admission.enter()
    # Under its floor with long iterations, but nothing waits: HTTP has what it asks for.
    admission._adjust(iteration=long)
    assert activity.delay == 0.0
    admission.leave(ticket)
    async with _short_of_its_floor() as (admission, activity):
        monkeypatch.setattr(fairness, "GRPC_IDLE", 0.0)
        admission._adjust(iteration=long)
        assert activity.delay == 0.0  # no RPC lately: nothing to pace


async def test_grpc_pacing_off_sets_no_pace() -> None:
    async with _short_of_its_floor() as (admission, activity):
        admission.pacing = False
        limit = admission.limit
        admission._adjust(iteration=10 * fairness.TARGET_HIGH)
        assert activity.delay == 0.0
        assert admission.limit == limit + 1  # admission control works as before


async def test_the_pace_is_dropped_when_http_has_nothing_in_flight() -> None:
    activity = GrpcActivity()
    admission = HttpAdmission(activity)
    admission.leave(await admission.enter())
    activity.delay = fairness.PACE_MAX
    admission._probe()
    assert activity.delay == 0.0


@pytest.mark.parametrize(
    ("name", "kind", "sends"),
    [
        ("Unary", "unary", 0),
        ("UnarySync", "unary", 0),
        ("ServerStream", "server", 3),  # async generator
        ("ServerStreamWrites", "server", 3),  # async def, context.write()
        ("ServerStreamSync", "server", 3),
        ("ClientStream", "client", 0),
        ("ClientStreamSync", "client", 0),
        ("Bidi", "bidi", 3),
        ("BidiSync", "bidi", 3),
    ],
)
async def test_a_paced_rpc_waits_before_its_handler_and_each_message_it_sends(
    name: str, kind: str, sends: int
) -> None:
    delay = 0.1
    async with LiveServer("project.asgi", loop_fairness=True) as live:
        activity = live.app.admission.grpc
        assert activity is not None
        async with grpc.aio.insecure_channel(live.grpc_target) as channel:
            activity.delay = delay
            start = time.monotonic()
            if kind == "unary":
                assert await channel.unary_unary(method(name))(b"x") == b"x"
            elif kind == "server":
                responses = channel.unary_stream(method(name))(b"3")
                assert [message async for message in responses] == [b"0", b"1", b"2"]
            elif kind == "client":
                assert await channel.stream_unary(method(name))(iter([b"a"] * 3)) == b"a,a,a"
            else:
                responses = channel.stream_stream(method(name))(iter([b"a"] * 3))
                assert [message async for message in responses] == [b"a"] * 3
            elapsed = time.monotonic() - start
        assert elapsed >= (1 + sends) * delay


async def test_pacing_never_takes_an_rpc_past_its_deadline() -> None:
    async with LiveServer("project.asgi", loop_fairness=True) as live:
        activity = live.app.admission.grpc
        assert activity is not None
        async with grpc.aio.insecure_channel(live.grpc_target) as channel:
            # Paced for all of 60 s, these 2 s RPCs would fail; each wait is held to a
            # quarter of the time the RPC has left, so they are answered.
            activity.delay = 60.0
            for name in ("Unary", "UnarySync"):
                start = time.monotonic()
                assert await channel.unary_unary(method(name))(b"x", timeout=2) == b"x"
                assert time.monotonic() - start >= 0.45  # paced all the same
            responses = channel.unary_stream(method("ServerStreamSync"))(b"3", timeout=2)
            assert [message async for message in responses] == [b"0", b"1", b"2"]
            # Health checks are not paced: without a deadline this would wait 60 s.
            health = health_pb2_grpc.HealthStub(channel)
            answer = await asyncio.wait_for(health.Check(health_pb2.HealthCheckRequest()), 10)
            assert answer.status == health_pb2.HealthCheckResponse.SERVING
