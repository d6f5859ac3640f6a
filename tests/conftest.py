"""Shared fixtures: a migrated database, live servers on port 0, and clients for them.

The database is a fresh SQLite file per test session unless ``DATABASE_URL`` names
another database. A ``postgres://`` URL names a server rather than a database: the
session creates a database of its own there, uniquely named, and drops it at the end.
Subprocess servers inherit the same environment, so a test and the server it starts see
the same database.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

import grpc
import httpx
import pytest

from tests import postgres

_tmp = tempfile.mkdtemp(prefix="hybridserver-tests-")
os.environ.setdefault("DATABASE_URL", f"sqlite:///{_tmp}/test.sqlite3")
#: The session's own PostgreSQL database (dropped at the end), or None on SQLite.
SESSION_POSTGRES: str | None = None
if postgres.is_postgres(os.environ["DATABASE_URL"]):
    SESSION_POSTGRES = postgres.create_database(os.environ["DATABASE_URL"])
    os.environ["DATABASE_URL"] = SESSION_POSTGRES
os.environ["DJANGO_SETTINGS_MODULE"] = "tests.settings"
# The developer's own HYBRIDSERVER_* variables must not change what the tests see.
for _name in [name for name in os.environ if name.startswith("HYBRIDSERVER_")]:
    del os.environ[_name]

import django  # noqa: E402

django.setup()

from hybridserver.testing import LiveServer, ServerProcess  # noqa: E402
from tests.servicers import SERVICE  # noqa: E402

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def pytest_unconfigure(config: pytest.Config) -> None:
    if SESSION_POSTGRES is not None:
        postgres.drop_database(SESSION_POSTGRES)


#: Modules whose tests never use the session's database (the command line, configuration,
#: packaging, process lifecycle). Marked ``no_database``: scripts/test runs them once, in
#: its SQLite run, to keep its two runs quick.
NO_DATABASE = {"test_cli", "test_config", "test_lifecycle", "test_packaging", "test_protos"}


@pytest.hookimpl(tryfirst=True)  # before ``-m`` deselects by marker
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if item.path.stem in NO_DATABASE:
            item.add_marker(pytest.mark.no_database)


def require_service(name: str, probe: Callable[[], object]) -> None:
    """Skip the calling test or fixture when ``probe()`` raises, saying why.

    Under ``CI=true`` a missing service fails instead: CI must run every test.
    """
    try:
        probe()
    except Exception as exc:
        message = " ".join(f"{name} is not reachable ({type(exc).__name__}: {exc})".split())
        if os.environ.get("CI", "").strip().lower() in ("true", "1", "yes"):
            pytest.fail(f"{message}; CI=true requires it", pytrace=False)
        pytest.skip(message)


@pytest.fixture(scope="session", autouse=True)
def database() -> Iterator[None]:
    from django.core.management import call_command
    from django.db import connections

    call_command("migrate", verbosity=0)
    connections.close_all()
    yield
    connections.close_all()


@pytest.fixture(scope="session")
def postgres_url() -> Iterator[str]:
    """A migrated PostgreSQL database for the tests that count its connections.

    Its own database even when the session's is PostgreSQL too, so that the only client
    besides the test's is the server under test. On a SQLite run it is made on the server
    that ``TEST_POSTGRES_URL`` names (default: :data:`tests.postgres.DEFAULT_URL`).
    """
    server = SESSION_POSTGRES or os.environ.get("TEST_POSTGRES_URL") or postgres.DEFAULT_URL
    require_service(f"PostgreSQL (to count its connections) at {server}", postgres.probe(server))
    url = postgres.create_database(server)
    try:
        subprocess.run(
            [sys.executable, "-m", "django", "migrate", "--verbosity", "0"],
            env={**os.environ, "DATABASE_URL": url},
            cwd=REPO,
            check=True,
            timeout=120,
        )
        yield url
    finally:
        postgres.drop_database(url)


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


_SERVERS = pytest.StashKey[list]()


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo) -> Any:
    """A failed test's report shows what its ``hybridserver run`` processes printed."""
    report = yield
    if report.failed:
        for process in item.stash.get(_SERVERS, []):
            title = "output of " + " ".join(process.command[1:])
            report.sections.append((title, process.output or "(nothing)"))
    return report


@pytest.fixture
def server_process(request: pytest.FixtureRequest) -> Iterator[Any]:
    """Start ``hybridserver run`` subprocesses; each is stopped at the end of the test,
    and a failed test's report shows their output."""
    started: list[ServerProcess] = []
    request.node.stash[_SERVERS] = started

    def start(*args: str, **kwargs: Any) -> ServerProcess:
        kwargs.setdefault("cwd", REPO)
        process = ServerProcess(*args, **kwargs)
        started.append(process)
        return process

    yield start
    for process in started:
        process.kill()


@pytest.fixture
def api_key() -> str:
    """An API key of a new superuser: what the example's endpoints need."""
    import uuid

    from django.contrib.auth import get_user_model
    from django.db import connections

    from hybridserver.auth.models import APIKey

    user = get_user_model().objects.create_superuser(f"admin-{uuid.uuid4().hex[:12]}")
    key = APIKey.objects.create_key(user, "tests")[1]
    connections.close_all()
    return key


@pytest.fixture
def auth_headers(api_key: str) -> dict[str, str]:
    """HTTP headers that authenticate as a superuser: ``http.get(..., headers=auth_headers)``."""
    return {"Authorization": f"Bearer {api_key}"}


@pytest.fixture
def auth_metadata(api_key: str) -> tuple[tuple[str, str], ...]:
    """gRPC metadata that authenticates as a superuser: ``stub.GetBook(..., metadata=...)``."""
    return (("authorization", f"Bearer {api_key}"),)


def method(name: str) -> str:
    """The full name of a ``hybridtest.Echo`` method."""
    return f"/{SERVICE}/{name}"
