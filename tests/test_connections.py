"""Connection discipline under load, counted by PostgreSQL itself.

A ``hybridserver run`` subprocess serves a database of its own (``postgres_url``). Its
migrations ran in a process that has exited, and each test first waits until the database
has no client at all; after that every client backend of that database in
``pg_stat_activity`` is the server's, except the watcher's own connection, which the
count leaves out (as it leaves out autovacuum workers). So the bound asserted is exactly
``THREADS``, nothing added. Bursts of 800 requests at once (RPCs and HTTP requests, sync
and async, each running a query) are eight times what ``max_connections`` (100) allows.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator

import grpc
import pytest

from hybridserver.testing import ServerProcess
from tests import settings_pool
from tests.conftest import REPO, method
from tests.postgres import Connections

pytestmark = [pytest.mark.postgres, pytest.mark.slow, pytest.mark.timeout(240)]

THREADS = 20
BURST = 800
TIMEOUT = 60


@pytest.fixture
def watcher(postgres_url: str) -> Iterator[Connections]:
    """Counts the connections to ``postgres_url``'s database; none are open at the start."""
    connections = Connections(postgres_url)
    try:
        # A server stopped by an earlier test may still be hanging up.
        connections.wait_for(lambda pids: not pids)
        yield connections
    finally:
        connections.close()


@pytest.fixture
def start(server_process, postgres_url: str):
    """Start a server on the connection tests' database with ``THREADS`` threads."""

    def start(*, conn_max_age: int = 0, settings: str = "tests.settings_cli") -> ServerProcess:
        env = {
            "DATABASE_URL": postgres_url,
            "DJANGO_CONN_MAX_AGE": str(conn_max_age),
            "DJANGO_SETTINGS_MODULE": settings,
        }
        return server_process("--threads", str(THREADS), "--no-access-log", env=env)

    return start


@dataclasses.dataclass
class Burst:
    pids: set[int]  # backends that answered the requests' ``SELECT pg_backend_pid()``
    errors: list[str]
    in_flight: int  # requests the client had sent and not yet seen answered, at most
    seconds: float


async def get(address: str, path: str) -> bytes:
    """GET over a connection of its own; the body of a 200.

    Plain asyncio rather than httpx, whose connection pool spends seconds of CPU on a few
    hundred connections opened at once (its pool bookkeeping is quadratic).
    """
    host, _, port = address.rpartition(":")
    reader, writer = await asyncio.open_connection(host, int(port))
    try:
        writer.write(
            f"GET {path} HTTP/1.1\r\nHost: {address}\r\nConnection: close\r\n\r\n".encode()
        )
        response = await asyncio.wait_for(reader.read(), TIMEOUT)
    finally:
        writer.close()
    head, _, body = response.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200 "), response
    return body


async def burst(server: ServerProcess, size: int = BURST) -> Burst:
    """``size`` requests at once, a quarter each: Backend and BackendSync RPCs, and GETs of
    the async and the sync view that run the same query."""
    in_flight = peak = 0
    async with grpc.aio.insecure_channel(server.grpc_target) as channel:
        rpcs = [channel.unary_unary(method(name)) for name in ("Backend", "BackendSync")]
        paths = ["/backend/", "/backend-sync/"]

        async def one(i: int) -> int:
            nonlocal in_flight, peak
            in_flight += 1
            peak = max(peak, in_flight)
            try:
                if i % 4 < 2:
                    body = await rpcs[i % 2](b"", timeout=TIMEOUT)
                else:
                    body = await get(server.http_address, paths[i % 2])
                return json.loads(body)["pid"]
            finally:
                in_flight -= 1

        started = time.monotonic()
        results = await asyncio.gather(*(one(i) for i in range(size)), return_exceptions=True)
        seconds = time.monotonic() - started
    errors = [repr(result) for result in results if isinstance(result, BaseException)]
    pids = {result for result in results if isinstance(result, int)}
    return Burst(pids, errors, peak, seconds)


async def watched_burst(server: ServerProcess, watcher: Connections) -> Burst:
    """A burst that succeeds entirely, while the watcher samples from its own thread."""
    watcher.start()
    try:
        result = await burst(server)
    finally:
        watcher.stop()
    print(
        f"burst of {BURST}: {result.seconds:.2f}s, {result.in_flight} in flight at most,"
        f" {watcher.peak} connections at most ({watcher.samples} samples),"
        f" {len(result.pids)} backends answered"
    )
    assert result.errors == [], f"{len(result.errors)} failed, e.g. {result.errors[0]}"
    assert result.in_flight > 100  # more than max_connections, at the same time
    assert watcher.samples > 10
    assert watcher.peak <= THREADS
    return result


async def test_burst_without_persistent_connections(start, watcher: Connections) -> None:
    """CONN_MAX_AGE=0: at most THREADS connections at once, and none once it is over."""
    with start(conn_max_age=0) as server:
        assert watcher.pids() == set()
        await watched_burst(server, watcher)
        # Each request closes its connection when it ends; the last ones are going away.
        watcher.wait_for(lambda pids: not pids)
        assert server.process.poll() is None


async def test_persistent_connections_are_reused_and_health_checked(
    start, watcher: Connections
) -> None:
    """CONN_MAX_AGE>0: one connection per thread, kept and reused by every later burst;
    connections killed under the server are replaced without a single failed request."""
    with start(conn_max_age=600) as server:
        first = await watched_burst(server, watcher)
        kept = watcher.pids()
        # Every request ran on a connection that is still open, one per thread: the
        # burst kept every thread busy, and the bound is reached, never passed.
        assert first.pids == kept
        assert len(kept) == THREADS
        peak = watcher.peak

        second = await watched_burst(server, watcher)
        assert second.pids <= kept, "a second burst opened new connections"
        assert watcher.seen <= kept
        assert watcher.peak <= peak
        assert watcher.pids() == kept

        # Kill them all, as a database restart or a proxy timeout would. Each thread's
        # health check (CONN_HEALTH_CHECKS) finds its connection dead and reconnects.
        watcher.terminate(kept)
        watcher.wait_for(lambda pids: not pids & kept)
        third = await watched_burst(server, watcher)
        assert not third.pids & kept
        assert 0 < len(watcher.pids()) <= THREADS


async def test_connection_pool_is_bounded_and_reused(start, watcher: Connections) -> None:
    """Django's own pool (OPTIONS["pool"]): never more than its max_size connections, and
    the same connections serve the next burst."""
    max_size = settings_pool.POOL["max_size"]
    with start(settings="tests.settings_pool") as server:
        await watched_burst(server, watcher)
        assert watcher.peak <= max_size
        pooled = watcher.pids()
        assert len(pooled) == max_size  # grown to its bound by threads waiting for it

        second = await watched_burst(server, watcher)
        assert watcher.peak <= max_size
        assert second.pids <= pooled, "the pool opened new connections for a second burst"


@pytest.mark.parametrize("settings", ["tests.settings_cli", "tests.settings_pool"])
async def test_sigterm_closes_connections(start, watcher: Connections, settings: str) -> None:
    """Connections kept open between requests (by CONN_MAX_AGE or by the pool) are closed
    when SIGTERM stops the server, and the server exits cleanly."""
    conn_max_age = 600 if settings == "tests.settings_cli" else 0
    with start(conn_max_age=conn_max_age, settings=settings) as server:
        result = await burst(server, THREADS * 4)
        assert result.errors == []
        assert result.pids and result.pids <= watcher.pids()
        server.signal(signal.SIGTERM)
        assert await asyncio.to_thread(server.wait, 30) == 0
    watcher.wait_for(lambda pids: not pids, timeout=10)
    assert "Traceback" not in server.output


# Run in a process of its own, whose settings turn the pool on: prints how many
# connections the database had while an in-process server ran, and once it had stopped.
STOP_IN_PROCESS = """
import asyncio, json, os
import django
django.setup()
import grpc
from hybridserver.testing import LiveServer
from tests.postgres import Connections

async def main():
    watcher = Connections(os.environ["DATABASE_URL"])
    others = watcher.pids()  # the test's own watcher, say
    async with LiveServer(threads=4) as server:
        async with grpc.aio.insecure_channel(server.grpc_target) as channel:
            call = channel.unary_unary("/hybridtest.Echo/BackendSync")
            await asyncio.gather(*(call(b"", timeout=30) for _ in range(16)))
        during = len(watcher.pids() - others)
    try:
        watcher.wait_for(lambda pids: not pids - others, timeout=5)
    finally:
        print(json.dumps({"during": during, "after": len(watcher.pids() - others)}))

asyncio.run(main())
"""


def test_stopped_server_closes_its_pool(postgres_url: str) -> None:
    """A server stopped inside a process that goes on (LiveServer) closes Django's pool:
    giving each thread's connection back to the pool is not enough."""
    env = {
        **os.environ,
        "DATABASE_URL": postgres_url,
        "DJANGO_SETTINGS_MODULE": "tests.settings_pool",
    }
    result = subprocess.run(
        [sys.executable, "-c", STOP_IN_PROCESS],
        env=env,
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
    )
    counts = json.loads(result.stdout.splitlines()[-1])
    assert counts["during"] > 0, result.stderr
    assert counts["after"] == 0, result.stderr
