"""``--workers N``: processes that share both ports, are replaced when they die, and
drain together on SIGTERM; with one process the gRPC port stays exclusive."""

from __future__ import annotations

import asyncio
import os
import signal

import grpc
import httpx
import pytest

from hybridserver.testing import READY_PATTERN, ServerExited, ServerProcess
from tests.conftest import method
from tests.processes import cli_env

pytestmark = pytest.mark.slow


def _ready_pids(server: ServerProcess, count: int) -> list[int]:
    server.wait_for_line(READY_PATTERN, timeout=60, count=count)
    return [int(m["pid"]) for m in READY_PATTERN.finditer(server.output)]


async def _serving_pids(target: str, connections: int = 24) -> set[int]:
    """Which processes answer, over many separate connections to the one port."""
    pids = set()
    for _ in range(connections):
        async with grpc.aio.insecure_channel(
            target, options=[("grpc.use_local_subchannel_pool", 1)]
        ) as channel:
            pids.add(int(await channel.unary_unary(method("Pid"))(b"", timeout=10)))
    return pids


async def test_workers_share_both_ports(server_process) -> None:
    with server_process("--workers", "2") as server:
        pids = _ready_pids(server, 2)
        assert len(set(pids)) == 2
        addresses = {m["grpc"] for m in READY_PATTERN.finditer(server.output)}
        assert addresses == {server.grpc_target}  # port 0 became one port for all
        # The kernel spreads connections over the workers' listeners.
        assert await _serving_pids(server.grpc_target) == set(pids)
        async with httpx.AsyncClient(base_url=server.http_url) as client:
            responses = await asyncio.gather(*(client.get("/healthz") for _ in range(20)))
        assert {r.status_code for r in responses} == {200}
        server.signal(signal.SIGTERM)
        assert server.wait() == 0


async def test_a_worker_that_dies_is_replaced(server_process) -> None:
    with server_process("--workers", "2") as server:
        first, second = _ready_pids(server, 2)
        os.kill(first, signal.SIGKILL)
        pids = _ready_pids(server, 3)
        replacement = pids[-1]
        assert replacement not in (first, second)
        assert "died" in server.output
        assert await _serving_pids(server.grpc_target) == {second, replacement}
        server.signal(signal.SIGTERM)
        assert server.wait() == 0


async def test_sigterm_drains_every_worker(server_process) -> None:
    # The interceptor prints "rpc started: METHOD" as each RPC reaches a worker.
    env = cli_env(GRPC_INTERCEPTORS=["tests.interceptors.AnnounceRpcs"])
    with server_process("--workers", "2", env=env) as server:
        _ready_pids(server, 2)
        # Connections until both workers hold some (the kernel picks by hash), then one
        # slow RPC on each.
        channels: list[grpc.aio.Channel] = []
        pids: set[int] = set()
        try:
            while len(pids) < 2 and len(channels) < 64:
                channel = grpc.aio.insecure_channel(
                    server.grpc_target, options=[("grpc.use_local_subchannel_pool", 1)]
                )
                channels.append(channel)
                pids.add(int(await channel.unary_unary(method("Pid"))(b"", timeout=10)))
            assert len(pids) == 2
            calls = [c.unary_unary(method("Sleep"))(b"1.5", timeout=30) for c in channels]
            started = f"rpc started: {method('Sleep')}$"
            await asyncio.to_thread(server.wait_for_line, started, 30, count=len(calls))
            server.signal(signal.SIGTERM)
            assert await asyncio.gather(*calls) == [b"slept"] * len(calls)
        finally:
            for channel in channels:
                await channel.close()
        assert server.wait() == 0
        assert server.output.count("Finished server process") == 2


async def test_single_process_keeps_the_grpc_port_exclusive(server_process) -> None:
    with server_process("--workers", "2") as workers:
        _ready_pids(workers, 2)
        port = workers.grpc_target.rsplit(":", 1)[1]
        with pytest.raises(ServerExited) as exited:
            with server_process("--grpc-port", port):
                pass
        assert exited.value.returncode != 0
        assert f"cannot bind gRPC port {port}" in exited.value.output
        workers.signal(signal.SIGTERM)
        assert workers.wait() == 0
