"""Writes under SIGTERM: what a client was told is saved is saved; what was refused left
nothing behind, not even part of a batch."""

from __future__ import annotations

import asyncio
import collections
import signal
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable

import grpc
import httpx
import pytest
from django.db import connections

from hybridserver.grpc.errors import INTERNAL_MESSAGE
from hybridserver.testing import ServerProcess
from project.catalog.grpc_gen.catalog.v1 import catalog_pb2, catalog_pb2_grpc
from project.catalog.models import Book
from tests.conftest import method

pytestmark = [pytest.mark.slow, pytest.mark.timeout(120)]

TIMEOUT = 30
SIGNAL_AFTER = 150  # acknowledged writes before SIGTERM
MAX_PER_WORKER = 200  # bounds the test should the server never stop
BATCH = 5  # books per CreateBooks stream

ACKED, REFUSED, LOST = "acknowledged", "refused", "lost"


class Ledger:
    """What each write's client was told: by title, and by batch for CreateBooks."""

    def __init__(self) -> None:
        self.outcomes: dict[str, str] = {}
        self.batches: list[tuple[list[str], str]] = []
        self.enough = asyncio.Event()
        self.signalled: float | None = None
        self.acked_after_signal = 0

    def record(self, titles: list[str], outcome: str) -> None:
        if outcome == ACKED and self.signalled is not None:
            self.acked_after_signal += len(titles)
        for title in titles:
            self.outcomes[title] = outcome
        if len(titles) > 1:
            self.batches.append((titles, outcome))
        if sum(outcome == ACKED for outcome in self.outcomes.values()) >= SIGNAL_AFTER:
            self.enough.set()

    def titles(self, outcome: str) -> set[str]:
        return {title for title, said in self.outcomes.items() if said.startswith(outcome)}


async def rest_write(http: httpx.AsyncClient, headers: dict[str, str], title: str) -> str:
    try:
        response = await http.post(
            "/api/books/", json={"title": title, "author": "durability"}, headers=headers
        )
    except (httpx.ConnectError, httpx.RemoteProtocolError, httpx.ReadError) as exc:
        # Connection refused, or a kept-alive connection closed before a request on it was
        # read: the server never saw this request.
        return f"{REFUSED}: {type(exc).__name__}"
    return ACKED if response.status_code == 201 else f"HTTP {response.status_code}"


async def rpc_outcome(call: Awaitable[object]) -> str:
    try:
        await call
    except grpc.aio.AioRpcError as exc:
        # UNAVAILABLE: refused after the signal. CANCELLED: the call had reached the server
        # but no handler yet when it began to stop; gRPC cancels such calls rather than
        # run them in the grace period (https://github.com/grpc/grpc/issues/41785). With
        # a grace period longer than this test, nothing in a handler is ever cut off.
        if exc.code() in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.CANCELLED):
            return f"{REFUSED}: {exc.code().name}"
        # Rarely, a client stream cut short by the server's GOAWAY fails in the client's
        # gRPC core, not in a handler (which would say INTERNAL_MESSAGE): the client
        # cannot know what happened, so it may be saved or not, but never in part.
        if exc.code() == grpc.StatusCode.INTERNAL and exc.details() != INTERNAL_MESSAGE:
            return f"{LOST}: {exc.details()}"
        return f"{exc.code().name}: {exc.details()}"
    return ACKED


async def write_load(
    server: ServerProcess,
    headers: dict[str, str],
    metadata: tuple[tuple[str, str], ...],
    prefix: str,
    ledger: Ledger,
) -> None:
    """Writers of four kinds, each writing until the server refuses it."""
    async with (
        httpx.AsyncClient(base_url=server.http_url, timeout=TIMEOUT) as http,
        grpc.aio.insecure_channel(server.grpc_target) as channel,
    ):
        books = catalog_pb2_grpc.BookServiceStub(channel)

        async def batch(titles: list[str]) -> AsyncIterator[catalog_pb2.CreateBookRequest]:
            for title in titles:
                yield catalog_pb2.CreateBookRequest(title=title, author="durability")
                await asyncio.sleep(0.002)  # so that batches are often in flight

        kinds: dict[str, Callable[[list[str]], Awaitable[str]]] = {
            "rest": lambda titles: rest_write(http, headers, titles[0]),
            "create": lambda titles: rpc_outcome(
                channel.unary_unary(method("Create"))(titles[0].encode(), timeout=TIMEOUT)
            ),
            "create-sync": lambda titles: rpc_outcome(
                channel.unary_unary(method("CreateSync"))(titles[0].encode(), timeout=TIMEOUT)
            ),
            "batch": lambda titles: rpc_outcome(
                books.CreateBooks(batch(titles), metadata=metadata, timeout=TIMEOUT)
            ),
        }

        async def writer(kind: str, number: int) -> None:
            for i in range(MAX_PER_WORKER):
                size = BATCH if kind == "batch" else 1
                titles = [f"{prefix}-{kind}-{number}-{i}-{j}" for j in range(size)]
                outcome = await kinds[kind](titles)
                ledger.record(titles, outcome)
                if outcome != ACKED:
                    return

        await asyncio.gather(*(writer(kind, n) for kind in kinds for n in range(3)))


def saved_titles(prefix: str) -> set[str]:
    try:
        return set(Book.objects.filter(title__startswith=prefix).values_list("title", flat=True))
    finally:
        connections.close_all()


async def test_acknowledged_writes_survive_sigterm(server_process, auth_headers, auth_metadata):
    prefix = f"durable-{uuid.uuid4().hex[:10]}"
    ledger = Ledger()
    with server_process("--no-access-log") as server:
        load = asyncio.create_task(write_load(server, auth_headers, auth_metadata, prefix, ledger))
        enough = asyncio.create_task(ledger.enough.wait())
        await asyncio.wait({load, enough}, return_when=asyncio.FIRST_COMPLETED)
        assert ledger.enough.is_set(), "the load ended before the signal"
        signalled = ledger.signalled = time.monotonic()
        server.signal(signal.SIGTERM)
        await asyncio.wait_for(load, TIMEOUT)
        assert await asyncio.to_thread(server.wait, TIMEOUT) == 0
        stopped = time.monotonic() - signalled

    saved = await asyncio.to_thread(saved_titles, prefix)
    acked = ledger.titles(ACKED)
    refused = ledger.titles(REFUSED)
    counts = collections.Counter(outcome.split(":")[0] for outcome in ledger.outcomes.values())
    print(
        f"{dict(counts)}; {len(saved)} saved; {ledger.acked_after_signal} acknowledged after"
        f" SIGTERM; stopped {stopped:.2f}s after it"
    )

    # Every write ended acknowledged or refused (or, rarely, lost in transit): no errors.
    assert set(counts) <= {ACKED, REFUSED, LOST}, collections.Counter(ledger.outcomes.values())
    assert len(acked) >= SIGNAL_AFTER
    # Writes in flight when the signal came were finished and answered, not dropped.
    assert ledger.acked_after_signal > 0
    # What was acknowledged is there; what was refused is not.
    assert acked - saved == set()
    assert refused & saved == set()
    assert saved <= set(ledger.outcomes)
    # Each CreateBooks batch is all there or not at all.
    for titles, outcome in ledger.batches:
        present = [title in saved for title in titles]
        assert all(present) or not any(present), (outcome, present)
