"""A real ``hybridserver run`` process from ready to exit: ports, signals, draining."""

from __future__ import annotations

import asyncio
import signal
import socket
import time
from typing import Any

import grpc
import httpx
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from hybridserver.grpc.server import SETTLE
from hybridserver.testing import LiveServer, ServerProcess
from tests.conftest import method
from tests.processes import (
    assert_free,
    cli_env,
    error_lines,
    free_port,
    listening,
    port_of,
    run_command,
    wait_for_exit,
    wait_for_line,
)
from tests.servicers import release

pytestmark = pytest.mark.slow

APP = "project.asgi"
SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING
# tests.settings_cli (with /slow/) plus an interceptor that prints "rpc started: METHOD".
ENV = cli_env(GRPC_INTERCEPTORS=["tests.interceptors.AnnounceRpcs"])


def health_check(target: str) -> int:
    with grpc.insecure_channel(target) as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        return stub.Check(health_pb2.HealthCheckRequest(), timeout=10).status


def test_ready_line_comes_after_both_ports_are_bound(server_process) -> None:
    with server_process() as proc:
        # At once, no retry: both listeners were open when the line was written.
        for address in (proc.http_address, proc.grpc_address):
            host, _, port = address.rpartition(":")
            socket.create_connection((host, int(port)), timeout=5).close()
        assert httpx.get(f"{proc.http_url}/healthz", timeout=10).status_code == 200
        assert health_check(proc.grpc_target) == SERVING


def test_busy_http_port() -> None:
    grpc_port = free_port()
    with listening() as port:
        result = run_command("run", APP, "--port", str(port), "--grpc-port", str(grpc_port))
    assert result.returncode == 1
    assert error_lines(result.stderr) == [
        f"hybridserver: error: cannot bind HTTP port {port} on 127.0.0.1: address already in use"
    ], result.stderr
    # It gave up before starting anything else.
    assert "Started server process" not in result.stderr + result.stdout
    assert_free(grpc_port)


def test_busy_grpc_port() -> None:
    http_port = free_port()
    with listening() as grpc_port:
        result = run_command("run", APP, "--port", str(http_port), "--grpc-port", str(grpc_port))
    assert result.returncode == 1
    assert error_lines(result.stderr) == [
        f"hybridserver: error: cannot bind gRPC port {grpc_port} on 127.0.0.1: "
        "address already in use"
    ], result.stderr
    assert "Started server process" not in result.stderr + result.stdout
    assert_free(http_port)


async def test_grpc_port_taken_after_the_check_fails_the_startup(caplog) -> None:
    # `run` looks at the gRPC port before starting; a port taken after that look (here:
    # an in-process server, which has no such look) is reported by the startup itself.
    with listening() as grpc_port:
        with pytest.raises(RuntimeError) as raised:
            async with LiveServer(grpc_port=grpc_port):
                pass
    message = f"cannot bind gRPC port {grpc_port} on 127.0.0.1: address already in use"
    assert str(raised.value) == f"hybridserver did not start: {message}"
    assert message in caplog.text


@pytest.mark.parametrize("protocol", ["HTTP", "gRPC"])
def test_second_instance_on_the_same_port_fails(server_process, protocol: str) -> None:
    with server_process() as first:
        if protocol == "gRPC":
            port = port_of(first.grpc_address)
            args = ["--port", "0", "--grpc-port", str(port)]
        else:
            port = port_of(first.http_address)
            args = ["--port", str(port), "--grpc-port", "0"]
        # Had the second shared the port (SO_REUSEPORT), it would serve until the timeout.
        second = run_command("run", APP, *args, timeout=30)
        assert second.returncode != 0
        message = f"cannot bind {protocol} port {port} on 127.0.0.1: address already in use"
        assert message in second.stderr, second.stderr
        # The first one is untouched.
        for _ in range(3):
            assert health_check(first.grpc_target) == SERVING
            assert httpx.get(f"{first.http_url}/healthz", timeout=10).status_code == 200
        with grpc.insecure_channel(first.grpc_target) as channel:
            assert channel.unary_unary(method("Unary"))(b"still", timeout=10) == b"still"
        first.signal(signal.SIGTERM)
        assert first.wait(30) == 0


async def start_work(
    proc: ServerProcess,
    channel: grpc.aio.Channel,
    http: httpx.AsyncClient,
    seconds: float,
    sync_rpcs: int = 1,
) -> dict[str, Any]:
    """An RPC of each kind and an HTTP request, each busy for ``seconds``; returns once
    the server has started every one of them. ``sync_rpcs`` SleepSync RPCs hold as
    many pooled threads."""
    arg = str(seconds).encode()
    work: dict[str, Any] = {
        "Sleep": asyncio.ensure_future(channel.unary_unary(method("Sleep"))(arg, timeout=60)),
        "http": asyncio.ensure_future(http.get("/slow/", params={"s": seconds})),
    }
    for i in range(sync_rpcs):
        call = channel.unary_unary(method("SleepSync"))(arg, timeout=60)
        work[f"SleepSync{i}"] = asyncio.ensure_future(call)
    stream = channel.unary_stream(method("SleepStream"))(arg, timeout=60)
    assert await stream.read() == b"start"
    work["SleepStream"] = stream
    for name, count in [("Sleep", 1), ("SleepSync", sync_rpcs), ("SleepStream", 1)]:
        await wait_for_line(proc, f"rpc started: {method(name)}$", count=count)
    await wait_for_line(proc, f"slow view started: {float(seconds)}$")
    return work


async def outcomes(work: dict[str, Any]) -> dict[str, Any]:
    """What became of the work: a result or an exception for each; for the stream, the
    rest of its messages and its status."""

    async def rest(stream: Any) -> tuple[list[bytes], grpc.StatusCode]:
        messages = []
        while (message := await stream.read()) is not grpc.aio.EOF:
            messages.append(message)
        return messages, await stream.code()

    names = list(work)
    results = await asyncio.gather(
        *[rest(work[name]) if name == "SleepStream" else work[name] for name in names],
        return_exceptions=True,
    )
    return dict(zip(names, results, strict=True))


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
async def test_signal_lets_work_in_flight_finish(server_process, sig: signal.Signals) -> None:
    with server_process("--graceful-timeout", "30", env=ENV) as proc:
        async with (
            grpc.aio.insecure_channel(proc.grpc_target) as channel,
            httpx.AsyncClient(base_url=proc.http_url, timeout=30) as http,
        ):
            health = health_pb2_grpc.HealthStub(channel)
            watch = health.Watch(health_pb2.HealthCheckRequest(), timeout=30)
            assert (await watch.read()).status == SERVING
            # Long enough to outlast the checks below on a busy machine.
            work = await start_work(proc, channel, http, 3)
            proc.signal(sig)
            signalled = time.monotonic()

            # Health watchers hear NOT_SERVING, and their stream ends.
            assert (await watch.read()).status == NOT_SERVING
            assert await watch.read() is grpc.aio.EOF
            assert await watch.code() == grpc.StatusCode.OK

            # Both listeners are closed while the work goes on.
            await wait_for_line(proc, r"Waiting for connections to close")
            async with httpx.AsyncClient() as fresh_http:
                with pytest.raises(httpx.ConnectError):
                    await fresh_http.get(f"{proc.http_url}/healthz")
            async with grpc.aio.insecure_channel(proc.grpc_target) as fresh:
                with pytest.raises(grpc.aio.AioRpcError) as refused:
                    await fresh.unary_unary(method("Unary"))(b"late", timeout=10)
            assert refused.value.code() == grpc.StatusCode.UNAVAILABLE
            with pytest.raises(grpc.aio.AioRpcError) as refused:
                await channel.unary_unary(method("Unary"))(b"late", timeout=10)
            assert refused.value.code() == grpc.StatusCode.UNAVAILABLE

            # The work in flight completes.
            done = await outcomes(work)
        assert await wait_for_exit(proc, 30) == 0, proc.output
        elapsed = time.monotonic() - signalled
    assert done["Sleep"] == b"slept"
    assert done["SleepSync0"] == b"slept"
    assert done["SleepStream"] == ([b"end"], grpc.StatusCode.OK)
    assert (done["http"].status_code, done["http"].text) == (200, "slept 3.0")
    # As long as the work took, not GRACEFUL_TIMEOUT (30 s).
    assert elapsed < 15, f"stopped after {elapsed:.1f} s:\n{proc.output}"
    for line in [
        "Shutting down: no new requests or RPCs; waiting for those in flight",
        "Waiting for application shutdown.",
        "Application shutdown complete.",
        "Finished server process",
    ]:
        assert line in proc.output
    assert "rpc started: /hybridtest.Echo/Unary" not in proc.output  # refused, not started


async def test_work_longer_than_graceful_timeout_is_cut_off(server_process) -> None:
    # Six sync RPCs hold six pooled threads that sleep on past the grace period.
    with server_process("--graceful-timeout", "1", env=ENV) as proc:
        async with (
            grpc.aio.insecure_channel(proc.grpc_target) as channel,
            httpx.AsyncClient(base_url=proc.http_url, timeout=60) as http,
        ):
            work = await start_work(proc, channel, http, 20, sync_rpcs=6)
            proc.signal(signal.SIGTERM)
            signalled = time.monotonic()
            status = await wait_for_exit(proc, 30)
            elapsed = time.monotonic() - signalled
            done = await outcomes(work)
    assert status == 0, proc.output
    # One grace period in all, plus a margin; not one per protocol or per thread.
    assert elapsed < 1 + 4, f"stopped after {elapsed:.1f} s:\n{proc.output}"
    assert "timeout graceful shutdown exceeded" in proc.output
    for name in ("Sleep", "SleepStream", *(f"SleepSync{i}" for i in range(6))):
        assert isinstance(done[name], grpc.aio.AioRpcError), done[name]
    # uvicorn answers a request it had to cancel with a 500.
    assert isinstance(done["http"], httpx.HTTPError) or done["http"].status_code == 500


@pytest.mark.parametrize("second", [signal.SIGTERM, signal.SIGINT])
async def test_second_signal_forces_exit(server_process, second: signal.Signals) -> None:
    with server_process("--graceful-timeout", "30", env=ENV) as proc:
        async with (
            grpc.aio.insecure_channel(proc.grpc_target) as channel,
            httpx.AsyncClient(base_url=proc.http_url, timeout=60) as http,
        ):
            work = await start_work(proc, channel, http, 20)
            proc.signal(signal.SIGTERM)
            await wait_for_line(proc, "Shutting down: no new requests")
            # Straight after the line: the second signal may interrupt the first
            # one's handler, and must still count as the second.
            proc.signal(second)
            signalled = time.monotonic()
            status = await wait_for_exit(proc, 15)
            elapsed = time.monotonic() - signalled
            done = await outcomes(work)
    assert status == 130, proc.output
    assert elapsed < 5, f"stopped after {elapsed:.1f} s:\n{proc.output}"
    assert "Second signal: forcing exit" in proc.output
    for name in ("Sleep", "SleepSync0", "SleepStream"):
        assert isinstance(done[name], grpc.aio.AioRpcError), done[name]
    assert isinstance(done["http"], httpx.HTTPError) or done["http"].status_code == 500


async def silent_connection(target: str) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    """An HTTP/2 connection to ``target`` whose client, once the server's SETTINGS frame
    has come, reads and answers nothing more: a peer gone without closing."""
    host, _, port = target.rpartition(":")
    reader, writer = await asyncio.open_connection(host, int(port))
    empty_settings = bytes([0, 0, 0, 4, 0, 0, 0, 0, 0])
    writer.write(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + empty_settings)
    frame_header = await asyncio.wait_for(reader.readexactly(9), 10)
    assert frame_header[3] == 4, frame_header  # SETTINGS: the connection is up
    return reader, writer


async def test_stop_waits_for_rpcs_not_for_silent_connections(server, channel) -> None:
    """A graceful stop lasts as long as the RPCs in flight, and then ends: it does not
    wait for a connection that never answers the PING of gRPC's GOAWAY (gRPC would
    wait 20 s for it)."""
    reader, writer = await silent_connection(server.grpc_target)
    held = channel.unary_stream(method("Hold"))(b"stop-waits", timeout=30)
    assert await held.read() == b"held"

    stopping = asyncio.ensure_future(server.app.grpc.stop())
    # Past the time gRPC gets after the last RPC, the held one is still waited for...
    done, _ = await asyncio.wait({stopping}, timeout=SETTLE + 1)
    assert not done
    release(b"stop-waits")
    assert await held.read() == b"released"
    assert await held.code() == grpc.StatusCode.OK
    # ...and once it has ended, the stop ends too, with the silent connection closed.
    await asyncio.wait_for(stopping, 10)
    await asyncio.wait_for(reader.read(), 10)  # up to the end of the stream
    assert reader.at_eof()
    writer.close()
