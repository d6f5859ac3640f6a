"""The fairness root cause, in isolation: a bare grpc.aio echo server whose loop also
runs N busy tasks, each spinning X microseconds and then yielding (``await
asyncio.sleep(0)``), so that one loop iteration lasts about N*X microseconds.

    python -m bench.loop_lab --busy-tasks 10 --spin-us 100

With iterations that long, gRPC throughput is bounded by the number of iterations a
second, whatever the client's concurrency and however many methods it calls: grpc.aio
moves an RPC forward about one completion-queue event per iteration. ``bench/run lab``
loads it with h2load at several concurrencies.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import time

import grpc
import uvloop


async def echo(request: bytes, context: object) -> bytes:
    return request


async def busy(spin: float) -> None:
    while True:
        end = time.perf_counter() + spin
        while time.perf_counter() < end:
            pass
        await asyncio.sleep(0)


async def serve(tasks: int, spin: float, registered: bool) -> None:
    server = grpc.aio.server()
    handlers = {
        "Echo": grpc.unary_unary_rpc_method_handler(echo),
        "Echo2": grpc.unary_unary_rpc_method_handler(echo),
    }
    if registered:
        server.add_registered_method_handlers("bench.Bench", handlers)
    else:
        server.add_generic_rpc_handlers(
            (grpc.method_handlers_generic_handler("bench.Bench", handlers),)
        )
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    running = [asyncio.ensure_future(busy(spin)) for _ in range(tasks)]
    print(f"bare grpc.aio ready: gRPC on 127.0.0.1:{port} (pid {os.getpid()}, uvloop loop)")
    try:
        await server.wait_for_termination()
    finally:
        for task in running:
            task.cancel()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--busy-tasks", type=int, default=0)
    parser.add_argument("--spin-us", type=float, default=0)
    parser.add_argument("--registered", action="store_true", help="registered methods")
    args = parser.parse_args()
    uvloop.run(serve(args.busy_tasks, args.spin_us / 1e6, args.registered))


if __name__ == "__main__":
    main()
