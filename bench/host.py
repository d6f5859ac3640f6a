"""How steady the machine stayed while the benchmark ran.

Ratios between two servers run side by side hold while a machine drifts; absolute
figures do not, and a virtual machine can lose half its speed for minutes at a time.
:class:`Gauge` times a fixed pure-Python loop on the servers' core before each scenario
and at the end of the run (best of a few tries, in CPU time, so a scheduler pause does
not count but a slower CPU does), and reads the time the hypervisor took from the
machine (steal, from ``/proc/stat``). A run is steady if its loop times stayed within
``MAX_SPREAD`` of each other and its steal under ``MAX_STEAL``; ``bench/run --publish``
publishes any other run with :func:`warning` above the table. The figures go into the
JSON and under the table either way.
"""

from __future__ import annotations

import os
import time
from typing import Any

from bench.load import SERVER_CPU

#: Iterations of the timed loop: some tens of milliseconds of CPU.
LOOP = 200_000
#: Tries per sample; the fastest counts.
TRIES = 5
#: The slowest sample may take this much longer than the fastest (0.15: 15%).
MAX_SPREAD = 0.15
#: Share of the run's CPU time the hypervisor may take.
MAX_STEAL = 0.02


def loop_ms() -> float:
    """CPU milliseconds of the fixed loop on the servers' core, fastest of ``TRIES``."""
    affinity = os.sched_getaffinity(0)
    os.sched_setaffinity(0, {int(SERVER_CPU)})
    try:
        best = float("inf")
        for _ in range(TRIES):
            start = time.thread_time()
            total = 0
            for i in range(LOOP):
                total += i * i % 7
            best = min(best, time.thread_time() - start)
        return best * 1e3
    finally:
        os.sched_setaffinity(0, affinity)


def _cpu_ticks() -> tuple[int, int] | None:
    """All CPU time and steal time since boot, in clock ticks, or None if unknown."""
    try:
        with open("/proc/stat") as stat:
            fields = stat.readline().split()
    except OSError:
        return None
    if fields[:1] != ["cpu"] or len(fields) < 9:
        return None
    ticks = [int(value) for value in fields[1:]]
    # user nice system idle iowait irq softirq steal [guest guest_nice, part of user]
    return sum(ticks[:8]), ticks[7]


class Gauge:
    def __init__(self) -> None:
        self.samples: list[tuple[str, float]] = []
        self._start = _cpu_ticks()

    def sample(self, label: str) -> None:
        self.samples.append((label, loop_ms()))

    def summary(self) -> dict[str, Any]:
        """The samples, their spread, and the steal since the gauge was made: read once,
        at the end of the run."""
        times = [ms for _, ms in self.samples]
        spread = max(times) / min(times) - 1 if times else None
        steal = None
        end = _cpu_ticks()
        if self._start is not None and end is not None and end[0] > self._start[0]:
            steal = (end[1] - self._start[1]) / (end[0] - self._start[0])
        return {
            "loop_ms": {label: round(ms, 2) for label, ms in self.samples},
            "loop_spread": None if spread is None else round(spread, 3),
            "steal": None if steal is None else round(steal, 4),
        }


def problems(summary: dict[str, Any]) -> list[str]:
    """Why a run with this :meth:`Gauge.summary` should not be published; empty if none."""
    problems = []
    spread, steal = summary["loop_spread"], summary["steal"]
    if spread is not None and spread > MAX_SPREAD:
        problems.append(
            f"the timed loop's CPU time moved by {spread:.0%} during the run "
            f"(at most {MAX_SPREAD:.0%})"
        )
    if steal is not None and steal > MAX_STEAL:
        problems.append(
            f"the hypervisor took {steal:.1%} of the CPU time (at most {MAX_STEAL:.0%})"
        )
    return problems


def warning(problems: list[str]) -> str:
    """The line above a published table whose run was not steady."""
    return (
        "**Unsteady host:** " + "; ".join(problems) + ". Absolute figures of rows run at "
        "different times do not compare; each comparison's ratio does, its two sides "
        "having run in alternating rounds of the same run."
    )


def line(summary: dict[str, Any]) -> str:
    """One line for under the table, from a :meth:`Gauge.summary`."""
    times = list(summary["loop_ms"].values())
    if not times:
        return ""
    text = (
        f"Host during the run: the timed loop (bench/host.py) took {min(times):.1f}-"
        f"{max(times):.1f} ms of CPU on the servers' core over {len(times)} samples "
        f"(spread {summary['loop_spread']:.0%})"
    )
    if summary["steal"] is not None:
        text += f"; steal {summary['steal']:.1%} of CPU time"
    return text + "."
