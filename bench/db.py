"""The benchmark's databases: a fresh SQLite file, and a PostgreSQL database that is
created if missing. Both are migrated and hold the one book the ORM benchmarks read."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Mapping

from bench.servers import PYTHON, REPO

RESULTS = os.path.join(REPO, "bench", "results")
POSTGRES_URL = os.environ.get(
    "BENCH_POSTGRES_URL", "postgres://postgres@127.0.0.1:5432/hybridserver_bench"
)

_SEED = """
import django
django.setup()
from project.catalog.models import Book
Book.objects.update_or_create(
    pk=1, defaults=dict(title="Dune", author="Frank Herbert", isbn="9780441013593", year=1965)
)
"""


def sqlite_url() -> str:
    os.makedirs(RESULTS, exist_ok=True)
    path = os.path.join(RESULTS, "bench.sqlite3")
    for suffix in ("", "-wal", "-shm"):
        if os.path.exists(path + suffix):
            os.unlink(path + suffix)
    return f"sqlite:///{path}"


def create_postgres_database(url: str) -> None:
    """CREATE DATABASE unless it exists (connecting to the ``postgres`` database)."""
    import psycopg

    base, _, name = url.rpartition("/")
    with psycopg.connect(f"{base}/postgres", autocommit=True, connect_timeout=5) as conn:
        exists = conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", [name]).fetchone()
        if not exists:
            conn.execute(f'CREATE DATABASE "{name}"')


def prepare(env: Mapping[str, str]) -> None:
    """Migrate the database of ``env`` and seed it."""
    for args in (["-m", "django", "migrate", "--noinput", "-v0"], ["-c", _SEED]):
        done = subprocess.run(
            [PYTHON, *args], cwd=REPO, env=dict(env), capture_output=True, text=True
        )
        if done.returncode != 0:
            raise RuntimeError(f"preparing {env['DATABASE_URL']} failed:\n{done.stderr}")
