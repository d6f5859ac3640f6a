"""PostgreSQL for the tests: throwaway databases, and counting a server's connections.

Imported by ``conftest`` before Django is set up, so nothing here may import Django.
"""

from __future__ import annotations

import os
import secrets
import threading
import time
from collections.abc import Callable
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import psycopg
from psycopg import sql

#: Where the PostgreSQL-only tests find a server when the session's own database is not
#: PostgreSQL (``scripts/test`` uses the same default for its PostgreSQL run).
DEFAULT_URL = "postgres://postgres@127.0.0.1:5432/postgres"
SCHEMES = ("postgres", "postgresql")


def is_postgres(url: str) -> bool:
    return urlsplit(url).scheme in SCHEMES


def with_database(url: str, name: str) -> str:
    """``url`` with its database name replaced, its query (options) kept."""
    parts = urlsplit(url)
    return urlunsplit(parts._replace(path="/" + name))


def database_name(url: str) -> str:
    return urlsplit(url).path.lstrip("/")


def connect(url: str, database: str | None = None) -> psycopg.Connection[Any]:
    """An autocommit connection: every statement sees fresh ``pg_stat_activity``."""
    parts = urlsplit(with_database(url, database) if database else url)
    # libpq speaks postgresql:// URIs; drop the query, which holds Django options.
    conninfo = urlunsplit(parts._replace(scheme="postgresql", query=""))
    return psycopg.connect(conninfo, autocommit=True, connect_timeout=5)


def probe(url: str) -> Callable[[], None]:
    """A ``require_service`` probe: connects to the maintenance database and hangs up."""

    def check() -> None:
        connect(url, "postgres").close()

    return check


def create_database(url: str) -> str:
    """Create an empty, uniquely named database on ``url``'s server; return its URL."""
    name = f"hybridserver_test_{os.getpid()}_{secrets.token_hex(4)}"
    with connect(url, "postgres") as admin:
        admin.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    return with_database(url, name)


def drop_database(url: str) -> None:
    """Drop ``url``'s database, ending any connection still open to it first."""
    name = database_name(url)
    with connect(url, "postgres") as admin:
        admin.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
            " WHERE datname = %s AND pid <> pg_backend_pid()",
            (name,),
        )
        # DROP DATABASE waits a few seconds for terminated backends to go away.
        admin.execute(sql.SQL("DROP DATABASE IF EXISTS {}").format(sql.Identifier(name)))


# Client backends only: autovacuum workers and the like also show a datname.
_SERVER_PIDS = (
    "SELECT pid FROM pg_stat_activity WHERE datname = %s"
    " AND backend_type = 'client backend' AND pid <> pg_backend_pid()"
)


class Connections:
    """Watches the connections to one database, other than its own.

    ``sample()`` in a thread of its own records the peak count and every backend pid seen
    until ``stop()``; ``pids()`` and ``wait_for()`` answer at once, between bursts.
    """

    def __init__(self, url: str) -> None:
        self.database = database_name(url)
        self._conn = connect(url)
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()
        self.peak = 0
        self.seen: set[int] = set()
        self.samples = 0

    def pids(self) -> set[int]:
        with self._lock:
            return {pid for (pid,) in self._conn.execute(_SERVER_PIDS, (self.database,))}

    def wait_for(self, predicate: Callable[[set[int]], bool], timeout: float = 15) -> set[int]:
        """Poll until ``predicate(pids)`` holds; return those pids or raise TimeoutError."""
        deadline = time.monotonic() + timeout
        while not predicate(pids := self.pids()):
            if time.monotonic() > deadline:
                raise TimeoutError(f"connections to {self.database} still {sorted(pids)}")
            time.sleep(0.02)
        return pids

    def terminate(self, pids: set[int]) -> None:
        with self._lock:
            for pid in pids:
                self._conn.execute("SELECT pg_terminate_backend(%s)", (pid,))

    def start(self) -> None:
        """Start sampling, afresh."""
        self.peak, self.seen, self.samples = 0, set(), 0
        self._stop.clear()
        self._thread = threading.Thread(target=self._sample, name="pg-sampler", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        assert self._thread is not None
        self._stop.set()
        self._thread.join(10)

    def _sample(self) -> None:
        while not self._stop.is_set():
            pids = self.pids()
            self.peak = max(self.peak, len(pids))
            self.seen |= pids
            self.samples += 1
            self._stop.wait(0.005)

    def close(self) -> None:
        self._conn.close()
