"""Load generators, pinned to the load core: wrk for HTTP/1.1, h2load for gRPC.

h2load speaks HTTP/2 and sends each unary RPC as a POST of a pre-encoded body (the
5-byte gRPC frame prefix and the message bytes) with ``content-type: application/grpc``
and ``te: trailers``. It is a C client like wrk, so the client is never the bottleneck
and both protocols are driven the same way. It cannot read the ``grpc-status`` trailer,
so every target RPC is checked once with a real gRPC client before it is loaded
(:func:`bench.servers.check_rpc`). h2load prints no percentiles; they come from its
per-request log (``--log-file``).
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import re
import statistics
import struct
import subprocess
import tempfile
from collections.abc import Iterable, Sequence
from typing import Any

HERE = os.path.dirname(os.path.abspath(__file__))
LOAD_CPU = "1"
SERVER_CPU = "0"


@dataclasses.dataclass
class Load:
    """The outcome of one load run."""

    rps: float
    p50_ms: float
    p99_ms: float
    requests: int
    errors: int
    #: Server CPU time (all threads) per completed request, microseconds: unlike
    #: throughput, it holds when other processes share the machine.
    cpu_us: float = float("nan")
    #: Context switches of the server's threads per completed request: how often work
    #: passes between threads (each switch costs CPU and cache), whatever the speed.
    switches: float = float("nan")

    @staticmethod
    def median(runs: Sequence[Load]) -> Load:
        """The median of each figure over repeated runs of the same load."""
        return Load(
            rps=statistics.median(r.rps for r in runs),
            p50_ms=statistics.median(r.p50_ms for r in runs),
            p99_ms=statistics.median(r.p99_ms for r in runs),
            requests=sum(r.requests for r in runs),
            errors=sum(r.errors for r in runs),
            cpu_us=statistics.median(r.cpu_us for r in runs),
            switches=_median_known(r.switches for r in runs),
        )


def _median_known(values: Iterable[float]) -> float:
    """The median of the values that were measured (not NaN); NaN if none was."""
    known = [value for value in values if not math.isnan(value)]
    return statistics.median(known) if known else float("nan")


def grpc_frame(message: bytes) -> bytes:
    """One uncompressed gRPC message frame: flag, 4-byte big-endian length, bytes."""
    return b"\x00" + struct.pack(">I", len(message)) + message


class Job:
    """One load generator process; ``start()`` then ``result()``."""

    command: list[str]

    def start(self) -> Job:
        self.process = subprocess.Popen(
            ["taskset", "-c", LOAD_CPU, *self.command],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        return self

    def result(self) -> Load:
        output, _ = self.process.communicate()
        if self.process.returncode != 0:
            raise RuntimeError(f"{self.command[0]} failed:\n{output}")
        return self.parse(output)

    def parse(self, output: str) -> Load:
        raise NotImplementedError


class Wrk(Job):
    """``wrk`` with one thread and ``connections`` keep-alive connections."""

    def __init__(self, url: str, *, connections: int, duration: float, headers: Any = ()) -> None:
        self.command = [
            "wrk",
            "-t1",
            f"-c{connections}",
            f"-d{max(1, round(duration))}s",
            "--timeout",
            "10s",
            "-s",
            os.path.join(HERE, "wrk_report.lua"),
        ]
        for name, value in headers:
            self.command += ["-H", f"{name}: {value}"]
        self.command.append(url)

    def parse(self, output: str) -> Load:
        match = re.search(r"^WRK_JSON (.*)$", output, re.MULTILINE)
        if match is None:
            raise RuntimeError(f"no summary from wrk:\n{output}")
        data = json.loads(match[1])
        return Load(
            rps=data["requests"] / (data["duration_us"] / 1e6),
            p50_ms=data["p50_us"] / 1000,
            p99_ms=data["p99_us"] / 1000,
            requests=data["requests"],
            errors=data["errors"] + data["non2xx"],
        )


class H2load(Job):
    """``h2load`` sending one unary RPC: ``clients`` connections, ``streams`` each;
    ``scheme="https"``: over TLS (HTTP/2 by ALPN; h2load does not check the certificate);
    ``rps``: at most that many RPCs a second on each connection."""

    def __init__(
        self,
        target: str,
        method: str,
        message: bytes,
        *,
        clients: int,
        streams: int,
        duration: float,
        metadata: Any = (),
        scheme: str = "http",
        rps: int | None = None,
    ) -> None:
        body = tempfile.NamedTemporaryFile(prefix="bench-body-", delete=False)
        body.write(grpc_frame(message))
        body.close()
        self.body = body.name
        self.log = tempfile.mktemp(prefix="bench-h2load-", suffix=".log")
        self.command = [
            "h2load",
            f"--duration={duration:g}",
            f"--clients={clients}",
            f"--max-concurrent-streams={streams}",
            f"--data={self.body}",
            f"--log-file={self.log}",
            "-H",
            "content-type: application/grpc",
            "-H",
            "te: trailers",
        ]
        if rps is not None:
            self.command.append(f"--rps={rps}")  # per connection
        for name, value in metadata:
            self.command += ["-H", f"{name}: {value}"]
        self.command.append(f"{scheme}://{target}{method}")

    def parse(self, output: str) -> Load:
        try:
            finished = re.search(r"finished in ([\d.]+)(m?s), ([\d.]+) req/s", output)
            counts = re.search(
                r"requests: (\d+) total, \d+ started, (\d+) done, (\d+) succeeded, (\d+) failed, "
                r"(\d+) errored, (\d+) timeout",
                output,
            )
            if finished is None or counts is None:
                raise RuntimeError(f"no summary from h2load:\n{output}")
            with open(self.log) as log:
                # start (us since epoch), HTTP status, microseconds to the end of the response
                times = sorted(int(line.split()[2]) for line in log if line.strip())
        finally:
            for path in (self.body, self.log):
                if os.path.exists(path):
                    os.unlink(path)
        succeeded = int(counts[3])
        return Load(
            rps=float(finished[3]),
            p50_ms=_percentile(times, 50) / 1000,
            p99_ms=_percentile(times, 99) / 1000,
            requests=succeeded,
            errors=int(counts[4]) + int(counts[5]) + int(counts[6]),
        )


def _percentile(values: Sequence[int], percent: float) -> float:
    if not values:
        return float("nan")
    return float(values[min(len(values) - 1, int(len(values) * percent / 100))])


def cpu_seconds(pid: int) -> float:
    """User and system CPU time of a process, all threads, in seconds."""
    with open(f"/proc/{pid}/stat") as stat:
        fields = stat.read().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


_SWITCHES = ("voluntary_ctxt_switches:", "nonvoluntary_ctxt_switches:")


def context_switches(pid: int) -> dict[str, int]:
    """Context switches, voluntary and not, of each live thread of a process."""
    counts = {}
    for task in os.listdir(f"/proc/{pid}/task"):
        try:
            with open(f"/proc/{pid}/task/{task}/status") as status:
                counts[task] = sum(
                    int(line.split()[1]) for line in status if line.startswith(_SWITCHES)
                )
        except FileNotFoundError:
            pass  # the thread ended
    return counts


def run(*jobs: Job, pids: Sequence[int] = (), steady_threads: bool = True) -> list[Load]:
    """Start the jobs together (a mixed load) and wait for all of them. With ``pids``
    (a server's processes, or several servers' measured as one deployment), each result
    carries the CPU time of those processes per request of the whole run, and their
    context switches per request if their threads all lasted the run (Linux counts them
    per thread; an ended thread's are gone): ``steady_threads=False`` for a process that
    starts and ends threads as it serves."""
    cpu_before = sum(cpu_seconds(p) for p in pids)
    switches_before = _switches(pids)
    for job in jobs:
        job.start()
    loads = [job.result() for job in jobs]
    if pids:
        requests = sum(load.requests for load in loads)
        if requests:
            cpu = (sum(cpu_seconds(p) for p in pids) - cpu_before) * 1e6 / requests
            switches_after = _switches(pids)
            switches = float("nan")
            if steady_threads and switches_before.keys() <= switches_after.keys():
                switches = (sum(switches_after.values()) - sum(switches_before.values())) / requests
            for load in loads:
                load.cpu_us, load.switches = cpu, switches
    return loads


def _switches(pids: Sequence[int]) -> dict[str, int]:
    # Thread ids are unique across processes, so the counts of several merge.
    return {task: count for pid in pids for task, count in context_switches(pid).items()}
