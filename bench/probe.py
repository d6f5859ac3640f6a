"""Loop probe for the fairness study: how many loop iterations a second, and how long.

Started by ``bench.servicers.register`` when ``BENCH_PROBE=1``; every second it prints
one line to stderr: ``probe: iterations/s, mean and p99 iteration time, longest``.
A callback that re-schedules itself with ``call_soon`` runs exactly once per loop
iteration, so the time between two runs is the length of one iteration. It also keeps
the loop from ever sleeping: use it to look at a loaded server, not to measure one.

    BENCH_PROBE=1 DJANGO_SETTINGS_MODULE=bench.settings hybridserver run project.asgi
"""

from __future__ import annotations

import asyncio
import sys
import time


class LoopProbe:
    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.last = time.perf_counter()
        self.window_start = self.last
        self.gaps: list[float] = []

    def start(self) -> None:
        self.loop.call_soon(self._tick)

    def _tick(self) -> None:
        now = time.perf_counter()
        self.gaps.append(now - self.last)
        self.last = now
        if now - self.window_start >= 1.0:
            self._report(now - self.window_start)
            self.window_start = now
            self.gaps = []
        self.loop.call_soon(self._tick)

    def _report(self, elapsed: float) -> None:
        gaps = sorted(self.gaps)
        n = len(gaps)
        print(
            f"probe: {n / elapsed:.0f} iterations/s, mean {sum(gaps) / n * 1e6:.0f} us, "
            f"p99 {gaps[int(n * 0.99)] * 1e6:.0f} us, max {gaps[-1] * 1e3:.1f} ms",
            file=sys.stderr,
            flush=True,
        )


def start() -> None:
    LoopProbe(asyncio.get_running_loop()).start()
