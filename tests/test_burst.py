"""Bursts: thousands of streams at once are normal traffic; only an explicit
GRPC_MAX_CONCURRENT_RPCS turns RPCs away, and exactly those over the limit."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator

import grpc
import pytest

from hybridserver.testing import LiveServer
from tests import servicers
from tests.conftest import method

pytestmark = pytest.mark.timeout(60)

TIMEOUT = 25


async def collect(stream: AsyncIterator[bytes]) -> list[bytes]:
    """The rest of a response stream."""
    return [message async for message in stream]


async def test_burst_of_server_streams(server):
    """2,000 streams opened at the same instant over 4 connections all succeed; all are
    open together, since none ends before every one of them has started."""
    count, channels_count = 2_000, 4
    name = uuid.uuid4().hex.encode()
    # A pool of its own per channel, so that each channel has its own connection.
    channels = [
        grpc.aio.insecure_channel(
            server.grpc_target, options=[("grpc.use_local_subchannel_pool", 1)]
        )
        for _ in range(channels_count)
    ]
    try:
        calls = [
            channels[i % channels_count].unary_stream(method("Hold"))(name, timeout=TIMEOUT)
            for i in range(count)
        ]
        # Iterating, not read(): once a call's status is in, read() answers EOF even
        # while a message is still unread.
        streams = [aiter(call) for call in calls]
        firsts = await asyncio.gather(*(anext(s) for s in streams), return_exceptions=True)
        failures = [first for first in firsts if isinstance(first, BaseException)]
        assert failures == [], f"{len(failures)} streams failed, e.g. {failures[0]!r}"
        assert firsts == [b"held"] * count
        servicers.release(name)
        rests = await asyncio.gather(*(collect(s) for s in streams))
        assert rests == [[b"released"]] * count
        codes = await asyncio.gather(*(call.code() for call in calls))
        assert set(codes) == {grpc.StatusCode.OK}
    finally:
        servicers.release(name)
        await asyncio.gather(*(channel.close() for channel in channels))


async def test_concurrency_limit_rejects_exactly_the_overflow():
    limit, overflow = 5, 3
    name = uuid.uuid4().hex.encode()
    async with LiveServer(grpc_max_concurrent_rpcs=limit) as server:
        async with grpc.aio.insecure_channel(server.grpc_target) as channel:
            hold = channel.unary_stream(method("Hold"))
            try:
                calls = [hold(name, timeout=TIMEOUT) for _ in range(limit + overflow)]
                streams = [aiter(call) for call in calls]
                # Every call ends up either held (in flight) or refused; none can finish.
                firsts = await asyncio.gather(*(anext(s) for s in streams), return_exceptions=True)
                held = [
                    (call, stream)
                    for call, stream, first in zip(calls, streams, firsts, strict=True)
                    if first == b"held"
                ]
                refused = [first for first in firsts if first != b"held"]
                assert len(held) == limit
                assert len(refused) == overflow
                for error in refused:
                    assert isinstance(error, grpc.aio.AioRpcError)
                    assert error.code() == grpc.StatusCode.RESOURCE_EXHAUSTED

                # Still full: a unary call is refused too.
                with pytest.raises(grpc.aio.AioRpcError) as caught:
                    await channel.unary_unary(method("Unary"))(b"x", timeout=TIMEOUT)
                assert caught.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED

                servicers.release(name)
                assert [await collect(stream) for _, stream in held] == [[b"released"]] * limit
                for call, _ in held:
                    assert await call.code() == grpc.StatusCode.OK
            finally:
                servicers.release(name)
            # The slots are free again.
            assert await channel.unary_unary(method("Unary"))(b"x", timeout=TIMEOUT) == b"x"
