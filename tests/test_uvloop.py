"""The real command runs on uvloop when it is installed, and grpc.aio holds up on it."""

from __future__ import annotations

import asyncio
import importlib.util
import json
import signal
import time

import grpc
import httpx
import pytest

from tests.conftest import method
from tests.processes import cli_env, wait_for_exit

pytestmark = pytest.mark.slow

UNARY = 2_000
STREAMS = 200
STREAM_LENGTH = 10
HTTP = 300
CHANNELS = 4


def test_uvloop_is_installed() -> None:
    # uvicorn[standard] brings it; without it the tests below would prove nothing.
    assert importlib.util.find_spec("uvloop") is not None


async def test_handlers_run_on_uvloop(server_process) -> None:
    with server_process() as proc:
        assert proc.loop == "uvloop", proc.output
        async with grpc.aio.insecure_channel(proc.grpc_target) as channel:
            info = json.loads(await channel.unary_unary(method("Info"))(b"", timeout=10))
        assert info["loop"] == "uvloop", info


async def test_grpc_and_http_under_load_on_uvloop(server_process) -> None:
    # This client's own loop can stall for seconds while it starts thousands of calls
    # (2 s measured on a quiet machine). A connection that the HTTP client has picked
    # for its next request but not yet written to would then outlive uvicorn's default
    # keep-alive of 5 s on a slow machine, and the server would close it as idle.
    keep_alive = ("--timeout-keep-alive", "120")
    with server_process("--no-access-log", *keep_alive, env=cli_env()) as proc:
        assert proc.loop == "uvloop"
        channels = [grpc.aio.insecure_channel(proc.grpc_target) for _ in range(CHANNELS)]
        limits = httpx.Limits(max_connections=50)
        http = httpx.AsyncClient(base_url=proc.http_url, timeout=60, limits=limits)

        async def unary(i: int) -> bytes:
            channel = channels[i % CHANNELS]
            name = "Unary" if i % 2 else "UnarySync"
            return await channel.unary_unary(method(name))(b"%d" % i, timeout=60)

        async def stream(i: int) -> list[bytes]:
            channel = channels[i % CHANNELS]
            call = channel.unary_stream(method("ServerStream"))(b"%d" % STREAM_LENGTH, timeout=60)
            return [message async for message in call]

        async def get(i: int) -> str:
            # Through Django's URLconf and an async view, or hybridserver's health path.
            path = "/slow/?s=0.01" if i % 2 else "/healthz"
            response = await http.get(path)
            response.raise_for_status()
            return response.text

        started = time.monotonic()
        try:
            unary_results, stream_results, http_results = await asyncio.wait_for(
                asyncio.gather(
                    asyncio.gather(*(unary(i) for i in range(UNARY))),
                    asyncio.gather(*(stream(i) for i in range(STREAMS))),
                    asyncio.gather(*(get(i) for i in range(HTTP))),
                ),
                timeout=120,
            )
        finally:
            await http.aclose()
            for channel in channels:
                await channel.close()
        elapsed = time.monotonic() - started

        assert unary_results == [b"%d" % i for i in range(UNARY)]
        expected = [str(n).encode() for n in range(STREAM_LENGTH)]
        assert stream_results == [expected] * STREAMS
        assert http_results == [
            "slept 0.01" if i % 2 else '{"status": "SERVING"}' for i in range(HTTP)
        ]
        proc.signal(signal.SIGTERM)
        assert await wait_for_exit(proc, 30) == 0, proc.output
    assert "Traceback" not in proc.output and "ERROR" not in proc.output, proc.output
    print(f"{UNARY} unary RPCs, {STREAMS} streams and {HTTP} requests in {elapsed:.1f} s")
