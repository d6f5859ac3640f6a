"""Holds N server streams open: ``python -m bench.streams TARGET N [CHANNELS]``.

Opens N calls of ``bench.Bench/Hold`` (one message, then silence) spread over CHANNELS
connections, waits until every one has delivered its first message, prints
``open N``, and keeps them open until stdin is closed. The benchmark reads the server's
resident memory before and after, and divides."""

from __future__ import annotations

import asyncio
import sys

import grpc

HOLD = "/bench.Bench/Hold"


async def hold(target: str, count: int, channels: int) -> None:
    opened = [
        grpc.aio.insecure_channel(target, options=[("grpc.use_local_subchannel_pool", 1)])
        for _ in range(channels)
    ]
    calls = [opened[i % channels].unary_stream(HOLD)(b"") for i in range(count)]
    for start in range(0, count, 500):
        await asyncio.gather(*(call.read() for call in calls[start : start + 500]))
    print(f"open {count}", flush=True)
    loop = asyncio.get_running_loop()
    await loop.run_in_executor(None, sys.stdin.read)
    for call in calls:
        call.cancel()
    for channel in opened:
        await channel.close()


def main() -> None:
    target, count = sys.argv[1], int(sys.argv[2])
    channels = int(sys.argv[3]) if len(sys.argv) > 3 else 10
    asyncio.run(hold(target, count, channels))


if __name__ == "__main__":
    main()
