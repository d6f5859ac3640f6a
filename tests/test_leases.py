"""``Lease.run_last``: the last sync call of a request, on its leased thread, made the
way ``sync_to_async`` would make it, and the thread given back as soon as it returns
(:mod:`hybridserver.threads`). Plain ``def`` RPC handlers are called so when no signal
receiver runs after them."""

from __future__ import annotations

import asyncio
import contextvars
import threading

import pytest
from asgiref.sync import async_to_sync

from hybridserver.threads import ThreadPool

WAIT = 10

colour: contextvars.ContextVar[str] = contextvars.ContextVar("colour", default="none")


@pytest.fixture
def pool():
    pool = ThreadPool(1)
    yield pool
    pool.shutdown(timeout=WAIT)


async def test_runs_on_the_leased_thread_in_a_copy_of_the_context(pool):
    def work() -> tuple[int, str]:
        seen = colour.get()
        colour.set("changed on the thread")
        return threading.get_ident(), seen

    colour.set("blue")
    async with pool.request_context() as lease:
        # The request's earlier sync calls ran on the same thread.
        earlier = await lease.submit(threading.get_ident)
        thread, seen = await lease.run_last(work)
        assert seen == "blue"
    assert thread == earlier != threading.get_ident()
    # What the call sets stays in its copy of the context.
    assert colour.get() == "blue"


async def test_async_to_sync_inside_runs_on_the_callers_loop(pool):
    async def running_loop() -> asyncio.AbstractEventLoop:
        return asyncio.get_running_loop()

    async with pool.request_context() as lease:
        assert await lease.run_last(async_to_sync(running_loop)) is asyncio.get_running_loop()


async def test_cancelling_cancels_what_async_to_sync_runs_inside(pool):
    waiting = asyncio.Event()
    cancelled = asyncio.Event()
    loop = asyncio.get_running_loop()

    async def wait_forever() -> None:
        waiting.set()
        try:
            await asyncio.sleep(3600)
        except asyncio.CancelledError:
            cancelled.set()
            raise

    def work() -> str:
        try:
            async_to_sync(wait_forever)()
        except asyncio.CancelledError:
            return "stopped"
        return "not stopped"

    async def request() -> None:
        async with pool.request_context() as lease:
            await lease.run_last(work)

    task = loop.create_task(request())
    await asyncio.wait_for(waiting.wait(), WAIT)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    await asyncio.wait_for(cancelled.wait(), WAIT)
    # The thread is free again: the next request's call runs.
    async with pool.request_context() as lease:
        assert await asyncio.wait_for(lease.run_last(lambda: "next"), WAIT) == "next"


async def test_the_last_call_gives_the_thread_back_before_the_request_ends(pool):
    async with pool.request_context() as first:
        thread = await first.run_last(threading.get_ident)
        # Still inside the first request. With one thread in the pool, the second
        # request's call can run only once the first has given its thread back.
        async with pool.request_context() as second:
            assert await asyncio.wait_for(second.run_last(threading.get_ident), WAIT) == thread


async def test_no_call_after_the_last(pool):
    async with pool.request_context() as lease:
        await lease.run_last(threading.get_ident)
        with pytest.raises(RuntimeError, match="has ended"):
            lease.submit(threading.get_ident)
