"""Servicer methods of every shape, sync and async, run the way Django runs a view."""

from __future__ import annotations

import asyncio
import json
import threading
import uuid

import grpc
import pytest

from tests.conftest import method

pytestmark = pytest.mark.timeout(60)

TIMEOUT = 10  # grpc deadline of every call: a hang fails fast with DEADLINE_EXCEEDED


def barrier(parties: int) -> bytes:
    """A ``name:parties`` request naming a fresh ``threading.Barrier`` in the servicer."""
    return f"{uuid.uuid4().hex}:{parties}".encode()


@pytest.mark.parametrize("name", ["Unary", "UnarySync"])
async def test_unary(channel, name):
    assert await channel.unary_unary(method(name))(b"hello", timeout=TIMEOUT) == b"hello"


@pytest.mark.parametrize("name", ["ServerStream", "ServerStreamSync", "ServerStreamWrites"])
async def test_server_streaming(channel, name):
    call = channel.unary_stream(method(name))(b"4", timeout=TIMEOUT)
    assert [message async for message in call] == [b"0", b"1", b"2", b"3"]
    assert await call.code() == grpc.StatusCode.OK


@pytest.mark.parametrize("name", ["ClientStream", "ClientStreamSync"])
async def test_client_streaming(channel, name):
    async def requests():
        for message in (b"a", b"b", b"c"):
            yield message

    assert await channel.stream_unary(method(name))(requests(), timeout=TIMEOUT) == b"a,b,c"


@pytest.mark.parametrize("name", ["ClientStreamSync", "ClientStream"])
async def test_client_streaming_empty(channel, name):
    assert await channel.stream_unary(method(name))(iter(()), timeout=TIMEOUT) == b""


@pytest.mark.parametrize("name", ["Bidi", "BidiSync"])
async def test_bidi_interleaves(channel, name):
    """Each answer arrives before the next request is sent: a real conversation."""
    call = channel.stream_stream(method(name))(timeout=TIMEOUT)
    for message in (b"one", b"two", b"three"):
        await call.write(message)
        assert await call.read() == message
    await call.done_writing()
    assert await call.read() is grpc.aio.EOF
    assert await call.code() == grpc.StatusCode.OK


@pytest.mark.parametrize("name", ["ThreadsSync", "Threads"])
async def test_concurrent_rpcs_run_on_their_own_threads(channel, name):
    """N RPCs that all wait on one Barrier(N) only pass if none waits for another;
    serialised on one thread they would break the barrier (INTERNAL after its timeout)."""
    parties = 8
    request = barrier(parties)
    call = channel.unary_unary(method(name))
    answers = await asyncio.gather(*(call(request, timeout=TIMEOUT) for _ in range(parties)))
    threads = [json.loads(answer) for answer in answers]
    # One RPC, one thread: both thread-sensitive calls of an RPC ran on the same thread.
    assert all(first == second for first, second in threads)
    # Concurrent RPCs, different threads, none of them the event loop's.
    assert len({first for first, _ in threads}) == parties
    assert threading.get_ident() not in {first for first, _ in threads}


async def test_thread_sensitive_calls_of_one_rpc_share_a_thread(channel):
    first, second = json.loads(await channel.unary_unary(method("Threads"))(b"", timeout=TIMEOUT))
    assert first == second != threading.get_ident()


async def test_blocking_sync_handler_does_not_block_the_loop(channel, http):
    """While a plain ``def`` handler sleeps in its thread, the loop serves gRPC and HTTP."""
    slow = channel.unary_stream(method("SleepStreamSync"))(b"2", timeout=TIMEOUT)
    # The handler is now inside time.sleep(2) on its pooled thread.
    responses = aiter(slow)
    assert await anext(responses) == b"start"
    end = asyncio.ensure_future(anext(responses))
    finished = []

    async def unary():
        assert await channel.unary_unary(method("Unary"))(b"x", timeout=TIMEOUT) == b"x"
        finished.append("unary")

    async def healthz():
        assert (await http.get("/healthz")).status_code == 200
        finished.append("healthz")

    await asyncio.gather(unary(), healthz())
    assert not end.done(), "the slow handler finished first: the loop was blocked"
    assert await end == b"end"
    finished.append("slow")
    assert finished[-1] == "slow" and set(finished[:2]) == {"unary", "healthz"}


async def test_slow_unary_sync_handler_finishes_last(channel, http):
    """A slow unary ``def`` handler (SleepSync) next to fast async work on the loop."""
    slow = asyncio.ensure_future(channel.unary_unary(method("SleepSync"))(b"2", timeout=TIMEOUT))
    order = []
    slow.add_done_callback(lambda _: order.append("slow"))
    await channel.unary_unary(method("Unary"))(b"x", timeout=TIMEOUT)
    order.append("unary")
    assert (await http.get("/healthz")).json() == {"status": "SERVING"}
    order.append("healthz")
    assert await slow == b"slept"
    assert order == ["unary", "healthz", "slow"]


@pytest.mark.parametrize("name", ["Info", "InfoSync"])
async def test_context_metadata_and_deadline(channel, name):
    call = channel.unary_unary(method(name))(
        b"", timeout=5, metadata=(("x-client", "hello"), ("x-other", "2"))
    )
    assert ("x-initial", "yes") in tuple(await call.initial_metadata())
    info = json.loads(await call)
    assert ("x-trailing", "yes") in tuple(await call.trailing_metadata())
    assert ["x-client", "hello"] in info["metadata"]
    assert ["x-other", "2"] in info["metadata"]
    # grpc-timeout travels rounded up (to whole milliseconds or coarser): allow for that.
    assert 0 < info["time_remaining"] <= 5.1
    assert info["method"] == method(name)


@pytest.mark.parametrize("name", ["Fail", "FailSync"])
async def test_abort_passes_through(channel, name):
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await channel.unary_unary(method(name))(b"abort", timeout=TIMEOUT)
    assert caught.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert caught.value.details() == "custom details"


@pytest.mark.parametrize("name", ["FailStream", "FailStreamSync"])
async def test_abort_in_stream_passes_through(channel, name):
    call = channel.unary_stream(method(name))(b"abort", timeout=TIMEOUT)
    received = []
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        async for message in call:
            received.append(message)
    assert received == [b"first"]
    assert caught.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert caught.value.details() == "custom details"
