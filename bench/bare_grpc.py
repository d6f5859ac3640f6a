"""A bare grpc.aio server with the benchmark's servicer: Django set up, nothing else.

    DJANGO_SETTINGS_MODULE=bench.settings python -m bench.bare_grpc --port 50052

The baseline for hybridserver's gRPC side: the same handlers on the same loop (uvloop),
without hybridserver's per-RPC wrapper, thread leases, error mapping or access log.
Plain ``def`` handlers run in a thread pool of the same size as hybridserver's.
"""

from __future__ import annotations

import argparse
import asyncio
import os
from concurrent.futures import ThreadPoolExecutor

import django
import grpc


async def serve(host: str, port: int, threads: int) -> None:
    from bench.servicers import register

    # The one option hybridserver also sets (grpc.server.max_pending_requests): without
    # it gRPC core refuses calls at random past 1,000 queued, and a burst of streams fails.
    options = [
        ("grpc.server.max_pending_requests", 1_000_000),
        ("grpc.server.max_pending_requests_hard_limit", 1_000_000),
    ]
    server = grpc.aio.server(migration_thread_pool=ThreadPoolExecutor(threads), options=options)
    register(server)
    bound = server.add_insecure_port(f"{host}:{port}")
    await server.start()
    loop = type(asyncio.get_running_loop()).__module__.partition(".")[0]
    print(f"bare grpc.aio ready: gRPC on {host}:{bound} (pid {os.getpid()}, {loop} loop)")
    await server.wait_for_termination()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--threads", type=int, default=40)
    parser.add_argument("--loop", choices=["uvloop", "asyncio"], default="uvloop")
    args = parser.parse_args()
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "bench.settings")
    django.setup()
    if args.loop == "uvloop":
        import uvloop

        uvloop.run(serve(args.host, args.port, args.threads))
    else:
        asyncio.run(serve(args.host, args.port, args.threads))


if __name__ == "__main__":
    main()
