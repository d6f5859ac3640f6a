"""Shared fixtures: a migrated database, live servers on port 0, and clients for them.

The database is a fresh SQLite file per test session unless ``DATABASE_URL`` names
another database. Subprocess servers inherit the same environment, so a test and the
server it starts see the same database.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import AsyncIterator, Iterator
from typing import Any

import grpc
import httpx
import pytest

_tmp = tempfile.mkdtemp(prefix="hybridserver-tests-")
os.environ.setdefault("DATABASE_URL", f"sqlite:///{_tmp}/test.sqlite3")
os.environ["DJANGO_SETTINGS_MODULE"] = "tests.settings"
# The developer's own HYBRIDSERVER_* variables must not change what the tests see.
for _name in [name for name in os.environ if name.startswith("HYBRIDSERVER_")]:
    del os.environ[_name]

import django  # noqa: E402

django.setup()

from hybridserver.testing import LiveServer, ServerProcess  # noqa: E402
from tests.servicers import SERVICE  # noqa: E402

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(scope="session", autouse=True)
def database() -> Iterator[None]:
    from django.core.management import call_command
    from django.db import connections

    call_command("migrate", verbosity=0)
    connections.close_all()
    yield
    connections.close_all()


@pytest.fixture
async def server() -> AsyncIterator[LiveServer]:
    """A hybridserver running in the test's own event loop, on free ports."""
    async with LiveServer("project.asgi") as live:
        yield live


@pytest.fixture
async def channel(server: LiveServer) -> AsyncIterator[grpc.aio.Channel]:
    async with grpc.aio.insecure_channel(server.grpc_target) as chan:
        yield chan


@pytest.fixture
async def http(server: LiveServer) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=server.http_url, timeout=30) as client:
        yield client


@pytest.fixture
def server_process() -> Iterator[Any]:
    """Start ``hybridserver run`` subprocesses; each is stopped at the end of the test."""
    started: list[ServerProcess] = []

    def start(*args: str, **kwargs: Any) -> ServerProcess:
        kwargs.setdefault("cwd", REPO)
        process = ServerProcess(*args, **kwargs)
        started.append(process)
        return process

    yield start
    for process in started:
        process.kill()


def method(name: str) -> str:
    """The full name of a ``hybridtest.Echo`` method."""
    return f"/{SERVICE}/{name}"
