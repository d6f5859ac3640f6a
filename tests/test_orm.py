"""The ORM from RPCs: async ORM in async handlers, sync ORM in sync ones, and the
per-request connection hygiene Django gives a view (``close_old_connections`` before and
after), done on the pooled thread that owns the connection."""

from __future__ import annotations

import asyncio
import json
import logging
import uuid
from collections.abc import AsyncIterator

import grpc
import pytest
from django.db import DEFAULT_DB_ALIAS, connections

from hybridserver.testing import LiveServer
from project.catalog.grpc_gen.catalog.v1 import catalog_pb2, catalog_pb2_grpc
from tests import servicers
from tests.conftest import method

pytestmark = pytest.mark.timeout(60)

TIMEOUT = 10


@pytest.fixture
def errors(caplog):
    """caplog, capturing what ``hybridserver.error`` logs at ERROR and above."""
    caplog.set_level(logging.ERROR, logger="hybridserver.error")
    return caplog


async def watched_conn(channel, name: str, then: str = "") -> tuple[dict, servicers.HygieneWatch]:
    """Run ConnSync/Conn; return its answer and the watch on its connection."""
    key = uuid.uuid4().hex
    request = f"{key}:{then}".encode()
    answer = json.loads(await channel.unary_unary(method(name))(request, timeout=TIMEOUT))
    return answer, servicers.watches.pop(key.encode())


async def checked(watch: servicers.HygieneWatch) -> None:
    """Wait until the pooled thread has checked the RPC's connection after the RPC."""
    assert await asyncio.to_thread(watch.checked.wait, TIMEOUT), (
        "the thread never checked its connection after the RPC"
    )


@pytest.mark.parametrize(("create", "count"), [("Create", "Db"), ("CreateSync", "DbSync")])
async def test_orm_in_handlers(channel, errors, create, count):
    before = json.loads(await channel.unary_unary(method(count))(b"", timeout=TIMEOUT))
    pk = await channel.unary_unary(method(create))(b"orm book", timeout=TIMEOUT)
    after = json.loads(await channel.unary_unary(method(count))(b"", timeout=TIMEOUT))
    assert int(pk) > 0
    assert after["count"] == before["count"] + 1
    if count == "Db":
        # The async ORM and a sync ORM call in the same async handler agree.
        assert after["acount"] == after["count"]
    # Nothing raised SynchronousOnlyOperation (or anything else) on the server.
    assert errors.records == []


async def test_book_service_all_four_kinds(channel, errors, auth_metadata):
    stub = catalog_pb2_grpc.BookServiceStub(channel)
    author = f"author-{uuid.uuid4().hex}"

    async def new_books() -> AsyncIterator[catalog_pb2.CreateBookRequest]:
        yield catalog_pb2.CreateBookRequest(title="First", author=author, year=2001)
        yield catalog_pb2.CreateBookRequest(title="Second", author=author)

    created = await stub.CreateBooks(new_books(), timeout=TIMEOUT, metadata=auth_metadata)
    assert created.created == 2
    first, second = created.books
    assert (first.title, first.year, second.title) == ("First", 2001, "Second")
    assert not second.HasField("year")

    got = await stub.GetBook(
        catalog_pb2.GetBookRequest(id=first.id), timeout=TIMEOUT, metadata=auth_metadata
    )
    assert (got.id, got.title, got.author) == (first.id, "First", author)

    listed = stub.ListBooks(
        catalog_pb2.ListBooksRequest(author=author), timeout=TIMEOUT, metadata=auth_metadata
    )
    assert [book.id async for book in listed] == [first.id, second.id]

    lookup = stub.LookupBooks(timeout=TIMEOUT, metadata=auth_metadata)
    await lookup.write(catalog_pb2.GetBookRequest(id=second.id))
    answer = await lookup.read()
    assert (answer.id, answer.found, answer.book.title) == (second.id, True, "Second")
    await lookup.write(catalog_pb2.GetBookRequest(id=-1))
    answer = await lookup.read()
    assert (answer.id, answer.found, answer.HasField("book")) == (-1, False, False)
    await lookup.done_writing()
    assert await lookup.read() is grpc.aio.EOF
    assert await lookup.code() == grpc.StatusCode.OK
    assert errors.records == []


async def test_rpcs_without_sync_code_borrow_no_thread(server, channel):
    pool = server.app.pool
    for _ in range(20):
        assert await channel.unary_unary(method("Unary"))(b"x", timeout=TIMEOUT) == b"x"
        stream = channel.unary_stream(method("ServerStream"))(b"3", timeout=TIMEOUT)
        assert [message async for message in stream] == [b"0", b"1", b"2"]
        assert await channel.unary_unary(method("Info"))(b"", timeout=TIMEOUT)
    call = channel.stream_stream(method("Bidi"))(iter([b"a", b"b"]), timeout=TIMEOUT)
    assert [message async for message in call] == [b"a", b"b"]
    assert pool.size == 0
    # The control: one ORM call borrows one thread.
    assert json.loads(await channel.unary_unary(method("Db"))(b"", timeout=TIMEOUT))
    assert pool.size == 1


@pytest.mark.parametrize("name", ["ConnSync", "Conn"])
async def test_connection_closed_after_rpc_on_its_thread(name):
    """CONN_MAX_AGE=0: the connection an RPC opened is closed as soon as the RPC ends,
    by the thread that opened it, without waiting for another request."""
    assert connections[DEFAULT_DB_ALIAS].settings_dict["CONN_MAX_AGE"] == 0
    async with LiveServer(threads=1) as server:
        async with grpc.aio.insecure_channel(server.grpc_target) as channel:
            answer, watch = await watched_conn(channel, name)
            assert watch.raw is not None and id(watch.raw) == answer["connection"]
            # No other RPC runs: only the end of this one can trigger the check.
            await checked(watch)
            assert watch.closed is True
            assert watch.wrapper.connection is None
            assert watch.checked_on == watch.thread == answer["thread"]


@pytest.fixture
def persistent_connections(monkeypatch):
    """CONN_MAX_AGE=600, and no Django health check at query time: only hybridserver's
    checks around each request can notice a bad connection."""
    database = connections.settings[DEFAULT_DB_ALIAS]
    monkeypatch.setitem(database, "CONN_MAX_AGE", 600)
    monkeypatch.setitem(database, "CONN_HEALTH_CHECKS", False)


@pytest.mark.usefixtures("persistent_connections")
@pytest.mark.parametrize("then", ["", "expire", "break"])
async def test_connection_checked_before_each_rpc(errors, then):
    """A kept connection is reused by the next RPC on its thread; one that expired or
    broke between two RPCs is replaced before the next RPC's first query."""
    async with LiveServer(threads=1) as server:
        async with grpc.aio.insecure_channel(server.grpc_target) as channel:
            first, watch = await watched_conn(channel, "ConnSync", then)
            await checked(watch)  # after the first RPC; then sabotaged if asked
            assert watch.closed is False  # still young: kept across requests
            second, next_watch = await watched_conn(channel, "ConnSync")
            assert second["thread"] == first["thread"]
            if then:
                assert second["connection"] != first["connection"]
                assert watch.wrapper.connection is not watch.raw
            else:
                assert second["connection"] == first["connection"]
                assert watch.wrapper.connection is watch.raw
            assert next_watch.wrapper is watch.wrapper
    assert errors.records == []
