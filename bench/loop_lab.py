"""The fairness root cause, in isolation: a bare grpc.aio echo server whose loop also
runs N busy tasks, each spinning X microseconds and then yielding (``await
asyncio.sleep(0)``), so that one loop iteration lasts about N*X microseconds.

    python -m bench.loop_lab --busy-tasks 10 --spin-us 100

With iterations that long, gRPC throughput is bounded by the number of iterations a
second, whatever the client's concurrency and however many methods it calls: grpc.aio
moves an RPC forward about one completion-queue event per iteration. ``bench/run lab``
loads it with h2load at several concurrencies.

Two limits, each about one RPC per four or five iterations, stand behind that:

- grpc.aio keeps one pending request for the next call per registered method (and one
  for all generic ones), and taking a call and asking for the next takes several
  iterations (the request's task, its completion, ``asyncio.wait``, the re-arm).
  ``--extra-accepts N`` keeps N more pending requests for each registered method, with
  grpc.aio's own accept machinery (private in grpcio 1.85: ``_make_request_call_future``,
  ``_handle_rpc``, ``_schedule_rpc_coro``), so that calls are taken N+1 at a time;
- grpc.aio's poller thread writes one byte to a socket for each completion event, and
  the loop reads one byte each time it wakes for it. The bytes pile up until the
  socket's buffer is full and the poller thread blocks in ``write()``, from then on
  taking one event from gRPC core per wake-up, so per iteration. ``--drain`` reads
  the socket empty on each wake-up instead.

``--count`` prints, at exit, the loop's iterations, how many RPCs were alive in each,
and how many completion events each wake-up of the loop brought (it implies
``--drain``). BENCHMARKS.md, sixth round, has the numbers.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import os
import signal
import time

import grpc
import uvloop
from grpc._cython import cygrpc

ECHO = "/bench.Bench/Echo"


class Counts:
    """What ``--count`` gathers: RPCs alive per iteration, events per wake-up."""

    def __init__(self) -> None:
        self.iterations = 0
        self.alive: collections.Counter[int] = collections.Counter()
        self.events: collections.Counter[int] = collections.Counter()
        self.start = time.monotonic()

    def iteration(self) -> None:
        self.iterations += 1
        alive = sum(1 for task in asyncio.all_tasks() if task.get_name() == "rpc_task")
        self.alive[alive] += 1

    def report(self) -> str:
        seconds = time.monotonic() - self.start
        wakes = sum(self.events.values())
        events = sum(n * k for n, k in self.events.items())
        alive = sum(n * k for n, k in self.alive.items()) / max(1, self.iterations)
        return (
            f"loop lab: {self.iterations / seconds:,.0f} iterations/s, "
            f"{alive:.1f} RPCs alive per iteration, {wakes / seconds:,.0f} wake-ups/s "
            f"bringing {events / max(1, wakes):.2f} completion events each"
        )


def draining_reader(sock, handler, counts: Counts | None):
    """grpc.aio's wake-up reader, reading every byte waiting on its socket first (one
    byte per event; grpc.aio's own reads one a wake-up), and counting them."""

    def reader(*args):
        count = 0
        try:
            while data := sock.recv(65536):
                count += len(data)
        except BlockingIOError:
            pass
        if counts is not None:
            counts.events[count] += 1
        handler(*args)

    return reader


async def echo(request: bytes, context: object) -> bytes:
    return request


async def busy(spin: float, counts: Counts | None) -> None:
    while True:
        end = time.perf_counter() + spin
        while time.perf_counter() < end:
            pass
        await asyncio.sleep(0)
        if counts is not None:
            counts.iteration()


async def accept(server: grpc.aio.Server, method: str, handler, rpcs: set) -> None:
    """One more pending request for the next call of a registered method, re-armed after
    each call, as grpc.aio's own accept loop does."""
    loop = asyncio.get_running_loop()
    core = server._server
    resolver = cygrpc._MethodResolver([], {method: handler})
    while True:
        try:
            state = await core._make_request_call_future(method.encode())
        except Exception:  # the server is stopping: core fails the pending request
            return
        rpc = cygrpc._handle_rpc(method, resolver, (), state, loop, False)
        task = loop.create_task(
            cygrpc._schedule_rpc_coro(rpc, state, loop, method), name="rpc_task"
        )
        rpcs.add(task)
        task.add_done_callback(rpcs.discard)


async def serve(
    tasks: int, spin: float, registered: bool, extra_accepts: int, drain: bool, count: bool
) -> None:
    loop = asyncio.get_running_loop()
    counts = Counts() if count else None
    if drain:
        # grpc.aio binds its wake-up socket to the loop as the first server is made.
        add_reader = loop.add_reader
        loop.add_reader = lambda sock, handler: add_reader(
            sock, draining_reader(sock, handler, counts)
        )
    server = grpc.aio.server()
    if drain:
        del loop.add_reader
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
    rpcs: set[asyncio.Task] = set()
    # The first busy task counts the iterations: each runs once per iteration.
    running = [asyncio.ensure_future(busy(spin, counts if i == 0 else None)) for i in range(tasks)]
    running += [
        asyncio.ensure_future(accept(server, ECHO, handlers["Echo"], rpcs))
        for _ in range(extra_accepts)
    ]
    if counts is not None:
        loop.add_signal_handler(signal.SIGTERM, lambda: asyncio.ensure_future(server.stop(0)))
    print(f"bare grpc.aio ready: gRPC on 127.0.0.1:{port} (pid {os.getpid()}, uvloop loop)")
    try:
        await server.wait_for_termination()
    finally:
        for task in running:
            task.cancel()
        if counts is not None:
            print(counts.report(), flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--busy-tasks", type=int, default=0)
    parser.add_argument("--spin-us", type=float, default=0)
    parser.add_argument("--registered", action="store_true", help="registered methods")
    parser.add_argument(
        "--extra-accepts",
        type=int,
        default=0,
        help="more pending requests for the next Echo call (implies --registered)",
    )
    parser.add_argument(
        "--drain", action="store_true", help="read the wake-up socket empty on each wake-up"
    )
    parser.add_argument(
        "--count",
        action="store_true",
        help="print iteration and wake-up counts at exit (implies --drain)",
    )
    args = parser.parse_args()
    registered = args.registered or args.extra_accepts > 0
    uvloop.run(
        serve(
            args.busy_tasks,
            args.spin_us / 1e6,
            registered,
            args.extra_accepts,
            args.drain or args.count,
            args.count,
        )
    )


if __name__ == "__main__":
    main()
