"""Registered methods are served from hybridserver's method table (one generic handler),
not as grpc.aio registered methods, whose cost grows with their number on every RPC;
they keep their precedence over generic handlers."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import grpc
import pytest

from hybridserver.testing import LiveServer
from tests.servicers_table import METHODS


@pytest.fixture
async def table_server() -> AsyncIterator[LiveServer]:
    async with LiveServer(grpc_servicers=("tests.servicers_table.register",)) as live:
        yield live


async def test_a_registered_method_wins_over_a_generic_handler(table_server: LiveServer) -> None:
    async with grpc.aio.insecure_channel(table_server.grpc_target) as channel:
        assert await channel.unary_unary("/table.Table/Both")(b"x") == b"registered x"


async def test_every_registered_method_answers(table_server: LiveServer) -> None:
    async with grpc.aio.insecure_channel(table_server.grpc_target) as channel:
        for i in (0, METHODS // 2, METHODS - 1):
            assert await channel.unary_unary(f"/table.Table/M{i}")(b"x") == b"registered x"
        with pytest.raises(grpc.aio.AioRpcError) as missing:
            await channel.unary_unary(f"/table.Table/M{METHODS}")(b"x")
    assert missing.value.code() == grpc.StatusCode.UNIMPLEMENTED


async def test_registered_methods_do_not_reach_grpc_as_registered(table_server: LiveServer) -> None:
    # The servicers' methods, health's and reflection's are in the table...
    server = table_server.app.grpc
    assert server is not None
    methods = set(server.table.handlers)
    assert {f"/table.Table/M{i}" for i in range(METHODS)} <= methods
    assert {
        "/table.Table/Both",
        "/grpc.health.v1.Health/Check",
        "/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo",
    } <= methods
    # ...so grpc.aio's accept loop has one pending request for the next call, for them
    # all (a task of the loop; one more per method grpc.aio knows as registered).
    pending = [
        name
        for task in asyncio.all_tasks()
        if "request" in (name := getattr(task.get_coro(), "__qualname__", "")).lower()
        and "call" in name.lower()
    ]
    assert pending == ["AioServer._request_call"]
