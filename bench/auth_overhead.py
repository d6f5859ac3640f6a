"""What authentication costs per request: the same cheap endpoint and RPC, with and without
an API key, against ``hybridserver run`` in a subprocess.

    .venv/bin/python -m bench.auth_overhead [--requests 2000] [--concurrency 32]

Endpoints (from ``tests.auth_views`` and ``tests.servicers_auth``): ``GET /auth/whoami``, an
async view that answers ``request.auser()`` without a query, and ``hybridtest.Auth/
WhoamiUnary``, an async RPC that answers ``context.user``. "no key" is the path every
unauthenticated request takes (no query, no thread); "key" adds the key's lookup (one
indexed query on a pooled thread). "GRPC_AUTH off" is the gRPC baseline without the hook.
The database is a fresh SQLite file. Prints requests per second, sequential and
concurrent.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SETTINGS = "bench.auth_settings"


async def rate(call: Callable[[], Awaitable[object]], requests: int, concurrency: int) -> float:
    """Requests per second over ``requests`` calls, ``concurrency`` at a time."""
    for _ in range(min(200, requests)):  # warm up: connections, caches, threads
        await call()
    remaining = requests

    async def worker() -> None:
        nonlocal remaining
        while remaining > 0:
            remaining -= 1
            await call()

    start = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return requests / (time.perf_counter() - start)


def prepare_database(env: dict[str, str]) -> str:
    """Migrate a fresh database and return a superuser's API key."""
    subprocess.run(
        [sys.executable, "-m", "django", "migrate", "--verbosity", "0"],
        env=env,
        cwd=REPO,
        check=True,
    )
    script = (
        "import django; django.setup()\n"
        "from django.contrib.auth import get_user_model\n"
        "from hybridserver.auth.models import APIKey\n"
        "user = get_user_model().objects.create_superuser('bench')\n"
        "print(APIKey.objects.create_key(user, 'bench')[1])\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", script], env=env, cwd=REPO, check=True, capture_output=True
    )
    return done.stdout.decode().split()[-1]


async def measure(server: object, key: str, args: argparse.Namespace, label: str) -> None:
    import grpc
    import httpx

    rows: list[tuple[str, Callable[[], Awaitable[object]]]] = []
    async with (
        httpx.AsyncClient(base_url=server.http_url, timeout=30) as http,  # type: ignore[attr-defined]
        grpc.aio.insecure_channel(server.grpc_target) as channel,  # type: ignore[attr-defined]
    ):
        whoami = channel.unary_unary("/hybridtest.Auth/WhoamiUnary")
        metadata = (("authorization", f"Bearer {key}"),)
        headers = {"Authorization": f"Bearer {key}"}

        async def http_anonymous() -> object:
            return (await http.get("/auth/whoami")).raise_for_status()

        async def http_key() -> object:
            return (await http.get("/auth/whoami", headers=headers)).raise_for_status()

        async def grpc_anonymous() -> object:
            return await whoami(b"")

        async def grpc_key() -> object:
            return await whoami(b"", metadata=metadata)

        rows = [
            (f"HTTP  {label}, no key", http_anonymous),
            (f"HTTP  {label}, key", http_key),
            (f"gRPC  {label}, no key", grpc_anonymous),
            (f"gRPC  {label}, key", grpc_key),
        ]
        for name, call in rows:
            sequential = await rate(call, args.requests // 4, 1)
            concurrent = await rate(call, args.requests, args.concurrency)
            print(f"{name:<32} {sequential:>9.0f} {concurrent:>12.0f}", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=2000)
    parser.add_argument("--concurrency", type=int, default=32)
    args = parser.parse_args()

    tmp = tempfile.mkdtemp(prefix="hybridserver-bench-auth-")
    env = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": SETTINGS,
        "DATABASE_URL": f"sqlite:///{tmp}/bench.sqlite3",
        "PYTHONPATH": REPO,
    }
    key = prepare_database(env)
    os.environ.update(env)

    from hybridserver.testing import ServerProcess

    print(f"{'':<32} {'seq. req/s':>9} {'concurrent':>12}  (concurrency {args.concurrency})")
    for label, extra in (("GRPC_AUTH on", {}), ("GRPC_AUTH off", {"BENCH_GRPC_AUTH": "0"})):
        with ServerProcess(env={**env, **extra}, cwd=REPO) as server:
            asyncio.run(measure(server, key, args, label))


if __name__ == "__main__":
    main()
