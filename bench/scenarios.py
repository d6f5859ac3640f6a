"""The measurements. Every comparison runs its contenders in the same run, interleaved
round by round (A B, then B A) with the same load and duration, so that a ratio holds
even as the machine drifts; each figure is the median over the rounds."""

from __future__ import annotations

import dataclasses
import importlib.util
import os
import statistics
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import ExitStack, contextmanager
from typing import Any

from bench import db
from bench.load import H2load, Job, Load, Wrk, run
from bench.report import Results
from bench.servers import (
    BARE_READY,
    ECHO,
    PYTHON,
    REPO,
    Server,
    bare_grpc,
    bench_env,
    check_rpc,
    django_grpc,
    hybridserver,
    socio_grpc,
    uvicorn,
)

#: The echo payload: the protobuf encoding of ``bytes payload = 1`` set to "hello", so a
#: raw-bytes echo and a protobuf echo see the same wire bytes.
ECHO_MESSAGE = b"\n\x05hello"
#: ``catalog.v1.GetBookRequest(id=1)``.
GET_BOOK_1 = b"\x08\x01"

GRPC_CLIENTS, GRPC_STREAMS = 4, 16
HTTP_CONNECTIONS = 100
GRPC_LOAD = f"h2load {GRPC_CLIENTS} connections x {GRPC_STREAMS} streams"
HTTP_LOAD = f"wrk {HTTP_CONNECTIONS} connections"


@dataclasses.dataclass
class Bench:
    """How long and how often to load; where results go."""

    duration: float
    rounds: int
    warmup: float
    quick: bool
    results: Results

    def compare(
        self, contenders: Sequence[tuple[str, Server, Callable[[float], Sequence[Job]]]]
    ) -> dict[str, list[Load]]:
        """Run each contender's jobs ``rounds`` times, interleaved; return, per
        contender, the median Load of each of its jobs."""
        for _, _, jobs in contenders:
            run(*jobs(self.warmup))
        runs: dict[str, list[list[Load]]] = {name: [] for name, _, _ in contenders}
        for round_ in range(self.rounds):
            order = contenders if round_ % 2 == 0 else list(reversed(contenders))
            for name, server, jobs in order:
                runs[name].append(
                    run(
                        *jobs(self.duration),
                        pids=server.pids(),
                        steady_threads=server.steady_threads,
                    )
                )
        self.last_runs = runs
        return {
            name: [Load.median([r[i] for r in rounds]) for i in range(len(rounds[0]))]
            for name, rounds in runs.items()
        }

    def round_shares(self, a: str, job: int, b: str, b_job: int = 0) -> list[float]:
        """Round by round, job ``job`` of ``a`` as a share of job ``b_job`` of ``b``, each
        round's pair run back to back: how far the single rounds behind a median spread."""
        pairs = zip(self.last_runs[a], self.last_runs[b], strict=True)
        return [x[job].rps / y[b_job].rps for x, y in pairs if y[b_job].rps]

    def paired_ratio(self, a: str, b: str, job: int = 0) -> float:
        """The median over rounds of a/b throughput: steadier than the ratio of medians
        while the machine's load drifts."""
        return statistics.median(self.round_shares(a, job, b, job))


def h2load(
    server: Server,
    method: str = ECHO,
    message: bytes = ECHO_MESSAGE,
    *,
    clients: int = GRPC_CLIENTS,
    streams: int = GRPC_STREAMS,
    **kw,
):
    def jobs(duration: float) -> list[Job]:
        return [
            H2load(
                server.grpc_target,
                method,
                message,
                clients=clients,
                streams=streams,
                duration=duration,
                scheme="https" if server.ca_pem is not None else "http",
                **kw,
            )
        ]

    return jobs


def wrk(server: Server, path: str = "/bench/echo", connections: int = HTTP_CONNECTIONS, **kw):
    def jobs(duration: float) -> list[Job]:
        return [Wrk(server.http_url + path, connections=connections, duration=duration, **kw)]

    return jobs


def both(*factories):
    def jobs(duration: float) -> list[Job]:
        return [job for factory in factories for job in factory(duration)]

    return jobs


@contextmanager
def servers(*servers: Server) -> Iterator[list[Server]]:
    with ExitStack() as stack:
        yield [stack.enter_context(server) for server in servers]


class Deployment:
    """Servers loaded as one deployment: the CPU time and context switches of all their
    processes count together."""

    steady_threads = True

    def __init__(self, *servers: Server) -> None:
        self.servers = servers

    def pids(self) -> tuple[int, ...]:
        return tuple(pid for server in self.servers for pid in server.pids())


def spread(shares: Sequence[float]) -> str:
    """``rounds 37-43%``: the lowest and highest of per-round shares."""
    if not shares:
        return "no rounds"
    return f"rounds {min(shares) * 100:.0f}-{max(shares) * 100:.0f}%"


def ratio(a: Load, b: Load) -> float:
    return a.rps / b.rps if b.rps else float("nan")


def sqlite_env(**extra: str) -> dict[str, str]:
    env = bench_env(db.sqlite_url(), **extra)
    db.prepare(env)
    return env


# --- scenarios ---------------------------------------------------------------------------


def echo(b: Bench) -> None:
    """gRPC unary echo: hybridserver against a bare grpc.aio server."""
    env = sqlite_env()
    section = f"gRPC unary echo ({GRPC_LOAD})"
    with servers(hybridserver("hybridserver", env), bare_grpc("bare", env)) as (hs, bare):
        got = b.compare(
            [
                ("hybridserver", hs, h2load(hs)),
                ("bare", bare, h2load(bare)),
                ("hybridserver sync", hs, h2load(hs, "/bench.Bench/EchoSync")),
                ("bare sync", bare, h2load(bare, "/bench.Bench/EchoSync")),
            ]
        )
    r = b.results
    r.add(section, "hybridserver, async def", got["hybridserver"][0])
    r.add(section, "bare grpc.aio, async def", got["bare"][0])
    r.add(section, "hybridserver, plain def", got["hybridserver sync"][0])
    r.add(section, "bare grpc.aio, plain def", got["bare sync"][0])
    r.target(
        "gRPC echo vs bare grpc.aio",
        ratio(got["hybridserver"][0], got["bare"][0]),
        0.90,
        ">=",
        "%",
        detail="async def",
    )


def http(b: Bench) -> None:
    """The JSON view: hybridserver against plain uvicorn serving the same Django app."""
    env = sqlite_env()
    section = f"HTTP JSON view /bench/echo ({HTTP_LOAD})"
    with servers(hybridserver("hybridserver", env), uvicorn("uvicorn", env)) as (hs, uv):
        got = b.compare([("hybridserver", hs, wrk(hs)), ("uvicorn", uv, wrk(uv))])
    b.results.add(section, "hybridserver", got["hybridserver"][0])
    b.results.add(section, "uvicorn project.asgi:application", got["uvicorn"][0])
    b.results.target(
        "HTTP vs plain uvicorn", ratio(got["hybridserver"][0], got["uvicorn"][0]), 0.95, ">=", "%"
    )


def mixed(b: Bench) -> None:
    """gRPC and HTTP loaded together on one server, against each protocol alone; with
    hybridserver's loop fairness on (the default), on without pacing RPCs, and off."""
    _mixed(b, wrk, f"mixed: {HTTP_LOAD} + {GRPC_LOAD}", "mixed", targets=True)


IO_CONNECTIONS, IO_WAIT_MS = 20, 50


def mixed_io(b: Bench) -> None:
    """The same with an I/O-bound view (``/bench/wait``: it awaits 50 ms), which does not
    crowd the loop: fairness should take nothing from it."""

    def io(server: Server):
        return wrk(server, f"/bench/wait?ms={IO_WAIT_MS}", connections=IO_CONNECTIONS)

    load = f"wrk {IO_CONNECTIONS} connections on a view awaiting {IO_WAIT_MS} ms"
    _mixed(b, io, f"mixed, I/O-bound view: {load} + {GRPC_LOAD}", "mixed_io", targets=False)


def mixed_sync_io(b: Bench) -> None:
    """The same with a sync view blocked on I/O (``/bench/wait-sync``: its thread sleeps
    50 ms, as on a slow query): it holds a thread, not the loop."""

    def io(server: Server):
        return wrk(server, f"/bench/wait-sync?ms={IO_WAIT_MS}", connections=IO_CONNECTIONS)

    load = f"wrk {IO_CONNECTIONS} connections on a sync view blocked {IO_WAIT_MS} ms"
    section = f"mixed, sync view blocked on I/O: {load} + {GRPC_LOAD}"
    _mixed(b, io, section, "mixed_sync_io", targets=False)


STREAM_MESSAGES, STREAM_CLIENTS, STREAM_STREAMS = 500, 1, 4
STREAM_LOAD = (
    f"h2load {STREAM_CLIENTS} connection x {STREAM_STREAMS} server streams"
    f" of {STREAM_MESSAGES} messages"
)


def mixed_stream(b: Bench) -> None:
    """The same with gRPC server streams (``Ticks``, 500 messages each, four at a time):
    the loop stays busy with gRPC work while few RPCs start."""

    def ticks(server: Server):
        message = str(STREAM_MESSAGES).encode()
        return h2load(
            server,
            "/bench.Bench/Ticks",
            message,
            clients=STREAM_CLIENTS,
            streams=STREAM_STREAMS,
        )

    section = f"mixed, gRPC server streams: {HTTP_LOAD} + {STREAM_LOAD}"
    _mixed(b, wrk, section, "mixed_stream", targets=False, grpc_load=ticks)


TRICKLE_RPS = 20


def trickle(b: Bench) -> None:
    """The HTTP load beside a trickle of RPCs (one connection, ``TRICKLE_RPS`` a second),
    fairness on, without pacing and off: admission control sees gRPC at work, and must
    not throttle HTTP for so little."""

    def rpcs(server: Server):
        return h2load(server, clients=1, streams=1, rps=TRICKLE_RPS)

    env = sqlite_env()
    contenders = [hybridserver(name, env, *flags) for name, flags in FAIRNESS]
    *fair, off = contenders
    with servers(*contenders):
        got = b.compare(
            [(f"{s.name}: HTTP", s, wrk(s)) for s in contenders]
            + [(f"{s.name}: with RPCs", s, both(wrk(s), rpcs(s))) for s in contenders]
        )
    rate = f"h2load 1 connection at {TRICKLE_RPS} RPC/s"
    section = f"HTTP beside a trickle of RPCs: {HTTP_LOAD} + {rate}"
    vs_off = {
        s.name: b.paired_ratio(f"{s.name}: with RPCs", f"{off.name}: with RPCs") for s in fair
    }
    b.results.settings["trickle"] = {"http_vs_fairness_off": vs_off}
    for server in contenders:
        name = server.name
        alone = got[f"{name}: HTTP"][0]
        http, rpcs_load = got[f"{name}: with RPCs"]
        rounds = b.round_shares(f"{name}: with RPCs", 0, f"{name}: HTTP")
        note = f"{ratio(http, alone):.0%} of alone ({spread(rounds)})"
        if name in vs_off:
            note += f"; {vs_off[name]:.2f}x {off.name}"
        b.results.add(section, f"{name}, HTTP alone", alone)
        b.results.add(section, f"{name}, HTTP beside the RPCs", http, note=note)
        b.results.add(section, f"{name}, the RPCs", rpcs_load)


def split(b: Bench) -> None:
    """One process or more on the one core, under the mixed load: a server serving both
    protocols in one loop; the same server code as two processes, one loaded with HTTP
    and the other with gRPC, as a team running an HTTP server and a gRPC server side by
    side would deploy them; and ``--workers 2``, two processes each serving both. Each
    protocol's throughput under the mixed load is a share of its own solo figure in the
    same deployment, so the shares compare across deployments."""
    env = sqlite_env()
    one = hybridserver("one process", env)
    http_side = hybridserver("two processes, HTTP", env)
    grpc_side = hybridserver("two processes, gRPC", env)
    workers = hybridserver("--workers 2", env, "--workers", "2")
    deployments = [
        ("one process", one, one, one),
        ("two processes, one per protocol", Deployment(http_side, grpc_side), http_side, grpc_side),
        ("--workers 2", workers, workers, workers),
    ]
    with servers(one, http_side, grpc_side, workers):
        got = b.compare(
            [(f"{name}: gRPC", d, h2load(g)) for name, d, _, g in deployments]
            + [(f"{name}: HTTP", d, wrk(h)) for name, d, h, _ in deployments]
            + [(f"{name}: mixed", d, both(wrk(h), h2load(g))) for name, d, h, g in deployments]
        )
    section = f"one process or two on one core: {HTTP_LOAD} + {GRPC_LOAD}"
    summary = b.results.settings.setdefault("split", {})
    for name, *_ in deployments:
        summary[name] = _add_shares(b, got, section, name, with_sum=True)


def middleware(b: Bench) -> None:
    """The mixed load, and each protocol alone, on two servers that differ only in how
    Django's middleware runs: coalesced (the default, :mod:`hybridserver.middleware`),
    or a thread hop per hook as Django's own chain makes them."""
    section = f"middleware coalesced or not: {HTTP_LOAD} + {GRPC_LOAD}"
    variants = (("coalesced", ()), ("Django's chain", ("--no-coalesce-middleware",)))
    _mixed(b, wrk, section, "middleware", targets=False, variants=variants)


#: The server under each mixed load: the defaults; loop fairness without pacing RPCs;
#: no loop fairness at all. Targets apply to the first.
FAIRNESS = (
    ("fairness on", ()),
    ("no pacing", ("--no-grpc-pacing",)),
    ("fairness off", ("--no-loop-fairness",)),
)


def _mixed(
    b: Bench,
    http_load,
    section: str,
    key: str,
    *,
    targets: bool,
    grpc_load=h2load,
    variants=FAIRNESS,
) -> None:
    """Each protocol alone and both at once, on one server per variant: ``variants``
    gives their names and ``hybridserver run`` flags; the targets, if any, apply to the
    first."""
    env = sqlite_env()
    contenders = [hybridserver(name, env, *flags) for name, flags in variants]
    with servers(*contenders):
        got = b.compare(
            [(f"{s.name}: gRPC", s, grpc_load(s)) for s in contenders]
            + [(f"{s.name}: HTTP", s, http_load(s)) for s in contenders]
            + [(f"{s.name}: mixed", s, both(http_load(s), grpc_load(s))) for s in contenders]
        )
    for server in contenders:
        shares = _add_shares(b, got, section, server.name)
        b.results.settings.setdefault(key, {})[server.name] = shares
        if server is contenders[0] and targets:
            r = b.results
            r.target(
                "mixed: gRPC keeps of its solo throughput", shares["grpc_share"], 0.40, ">=", "%"
            )
            r.target(
                "mixed: HTTP keeps of its solo throughput", shares["http_share"], 0.40, ">=", "%"
            )
            r.target("mixed: gRPC p99 vs its solo p99", shares["grpc_p99_ratio"], 5.0, "<=", "x")


def _add_shares(
    b: Bench, got: dict[str, list[Load]], section: str, name: str, *, with_sum: bool = False
) -> dict[str, Any]:
    """The rows of one contender of a mixed comparison: ``{name}: gRPC`` and ``{name}:
    HTTP`` alone, ``{name}: mixed`` with jobs (wrk, h2load). Returns its shares of its
    solo figures; ``with_sum``: the HTTP row's note also gives the two shares' sum."""
    grpc_solo, http_solo = got[f"{name}: gRPC"][0], got[f"{name}: HTTP"][0]
    http_mixed, grpc_mixed = got[f"{name}: mixed"]
    grpc_share, http_share = ratio(grpc_mixed, grpc_solo), ratio(http_mixed, http_solo)
    grpc_p99_ratio = grpc_mixed.p99_ms / grpc_solo.p99_ms
    # The mixed job list is (wrk, h2load): HTTP is job 0, gRPC job 1.
    grpc_rounds = b.round_shares(f"{name}: mixed", 1, f"{name}: gRPC")
    http_rounds = b.round_shares(f"{name}: mixed", 0, f"{name}: HTTP")
    http_note = f"{http_share:.0%} of alone ({spread(http_rounds)})"
    if with_sum:
        http_note += f"; sum of the shares {grpc_share + http_share:.0%}"
    b.results.add(section, f"{name}, gRPC alone", grpc_solo)
    b.results.add(section, f"{name}, HTTP alone", http_solo)
    b.results.add(
        section,
        f"{name}, gRPC mixed",
        grpc_mixed,
        note=f"{grpc_share:.0%} of alone ({spread(grpc_rounds)}); p99 {grpc_p99_ratio:.1f}x",
    )
    b.results.add(section, f"{name}, HTTP mixed", http_mixed, note=http_note)
    return {
        "grpc_share": grpc_share,
        "http_share": http_share,
        "grpc_p99_ratio": grpc_p99_ratio,
        "grpc_share_rounds": grpc_rounds,
        "http_share_rounds": http_rounds,
    }


def orm(b: Bench) -> None:
    """One row read per request: an RPC and a view, async ORM and sync ORM, on SQLite and
    PostgreSQL. RPCs against a bare grpc.aio server, views against plain uvicorn."""
    databases = [("SQLite", db.sqlite_url())]
    try:
        db.create_postgres_database(db.POSTGRES_URL)
        databases.append(("PostgreSQL", db.POSTGRES_URL))
    except Exception as exc:
        b.results.missing.append(f"ORM on PostgreSQL: {db.POSTGRES_URL} unavailable: {exc}")
    for label, url in databases:
        env = bench_env(url)
        db.prepare(env)
        # Under plain uvicorn every request runs in a new thread, so a kept connection
        # would never be reused (and would pile up): Django's default, closing it after
        # each request, is the only sane setting there.
        uv_env = bench_env(url, DJANGO_CONN_MAX_AGE="0")
        hs, bare, uv = (
            hybridserver("hybridserver", env),
            bare_grpc("bare", env),
            uvicorn("uv", uv_env),
        )
        with servers(hs, bare, uv):
            # Eight contenders on two databases: two rounds keep the full run bounded.
            got = dataclasses.replace(b, rounds=min(b.rounds, 2)).compare(
                [
                    ("rpc async hs", hs, h2load(hs, "/bench.Bench/GetBookAsync", GET_BOOK_1)),
                    ("rpc async bare", bare, h2load(bare, "/bench.Bench/GetBookAsync", GET_BOOK_1)),
                    ("rpc sync hs", hs, h2load(hs, "/bench.Bench/GetBookSync", GET_BOOK_1)),
                    ("rpc sync bare", bare, h2load(bare, "/bench.Bench/GetBookSync", GET_BOOK_1)),
                    ("view async hs", hs, wrk(hs, "/bench/book-async")),
                    ("view async uv", uv, wrk(uv, "/bench/book-async")),
                    ("view sync hs", hs, wrk(hs, "/bench/book-sync")),
                    ("view sync uv", uv, wrk(uv, "/bench/book-sync")),
                ]
            )
        section = f"ORM, one row, {label}"
        for kind, what in (("rpc", "RPC"), ("view", "view")):
            for mode, style in (("async", "async ORM"), ("sync", "sync ORM, plain def")):
                base = "bare" if kind == "rpc" else "uv"
                other = "bare grpc.aio" if kind == "rpc" else "uvicorn (CONN_MAX_AGE=0)"
                mine, theirs = got[f"{kind} {mode} hs"][0], got[f"{kind} {mode} {base}"][0]
                b.results.add(
                    section,
                    f"{what}, {style}: hybridserver",
                    mine,
                    note=f"{ratio(mine, theirs):.2f}x",
                )
                b.results.add(section, f"{what}, {style}: {other}", theirs)


def streams(b: Bench) -> None:
    """Resident memory per open server stream, at 1,000 and 10,000 streams."""
    env = sqlite_env()
    counts = (1000,) if b.quick else (1000, 10000)
    section = "memory per open server stream (RSS delta / streams)"
    per_stream: dict[tuple[str, int], float] = {}
    for name, factory in (("hybridserver", hybridserver), ("bare grpc.aio", bare_grpc)):
        for count in counts:
            with factory(name, env) as server:
                _hold_streams(server, 200).close()  # warm up: first streams, first frames
                time.sleep(1)
                before = server.rss_kib()
                client = _hold_streams(server, count)
                time.sleep(1)
                after = server.rss_kib()
                client.close()
            kib = (after - before) / count
            per_stream[(name, count)] = kib
            b.results.add(
                section,
                f"{name}, {count:,} streams",
                note=f"{kib:.1f} KiB/stream (RSS {before / 1024:.0f} -> {after / 1024:.0f} MiB)",
                values={"kib_per_stream": kib, "rss_before_kib": before, "rss_after_kib": after},
            )
    top = max(counts)
    b.results.target(
        f"memory per open stream at {top:,}", per_stream[("hybridserver", top)], 25.0, "<=", "KiB"
    )


class _Holder:
    def __init__(self, process: subprocess.Popen[str]) -> None:
        self.process = process

    def close(self) -> None:
        assert self.process.stdin is not None
        self.process.stdin.close()
        self.process.wait(60)


def _hold_streams(server: Server, count: int) -> _Holder:
    process = subprocess.Popen(
        ["taskset", "-c", "1", PYTHON, "-m", "bench.streams", server.grpc_target, str(count)],
        cwd=REPO,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    assert process.stdout is not None
    line = process.stdout.readline()
    if not line.startswith("open"):
        process.kill()
        raise RuntimeError(f"stream client failed: {line}{process.stdout.read()}")
    return _Holder(process)


def auth(b: Bench) -> None:
    """The auth layer on (the project's settings) and off (no API-key middleware, GRPC_AUTH
    off), and with an API key on every request."""
    if importlib.util.find_spec("hybridserver.auth") is None:
        b.results.missing.append(
            "auth on vs off: not measured yet (no hybridserver.auth); run `bench/run auth`"
        )
        return
    env = sqlite_env()
    key = _api_key(env)
    on = hybridserver("auth on", env)
    off = hybridserver("auth off", {**env, "BENCH_AUTH": "off"})
    with_key = [("x-api-key", key)]
    with servers(on, off):
        check_rpc(on.grpc_target, ECHO, ECHO_MESSAGE, with_key)
        got = b.compare(
            [
                ("grpc off", off, h2load(off)),
                ("grpc on", on, h2load(on)),
                ("grpc key", on, h2load(on, metadata=with_key)),
                ("http off", off, wrk(off)),
                ("http on", on, wrk(on)),
                ("http key", on, wrk(on, headers=with_key)),
            ]
        )
    section = "auth: echo RPC and JSON view"
    for proto in ("grpc", "http"):
        label = "gRPC echo" if proto == "grpc" else "HTTP /bench/echo"
        off_load = got[f"{proto} off"][0]
        b.results.add(section, f"{label}: auth off", off_load)
        for case, text in (("on", "auth on, no credentials"), ("key", "auth on, API key")):
            load = got[f"{proto} {case}"][0]
            b.results.add(
                section, f"{label}: {text}", load, note=f"{ratio(load, off_load):.0%} of off"
            )


#: A new connection for every request: the header, and how many wrk keeps going at once.
CLOSE = [("connection", "close")]
CLOSE_CONNECTIONS = 20


def tls(b: Bench) -> None:
    """TLS on both servers (``--ssl-certfile``/``--ssl-keyfile``) against none, on the
    echo RPC and the JSON view with connections kept open (the cost of encrypting
    requests and responses), and on the JSON view with a new connection per request
    (``Connection: close``: a TLS handshake each)."""
    import trustme  # a test dependency, as the bench's other Python packages are

    ca = trustme.CA()
    cert = ca.issue_cert("127.0.0.1", "localhost")
    folder = tempfile.mkdtemp(prefix="bench-tls-")
    certfile, keyfile = os.path.join(folder, "cert.pem"), os.path.join(folder, "key.pem")
    cert.cert_chain_pems[0].write_to_path(certfile)
    cert.private_key_pem.write_to_path(keyfile)
    env = sqlite_env()
    on = hybridserver("TLS", env, tls=(certfile, keyfile, ca.cert_pem.bytes()))
    off = hybridserver("plain", env)
    with servers(on, off):
        got = b.compare(
            [
                ("grpc off", off, h2load(off)),
                ("grpc on", on, h2load(on)),
                ("http off", off, wrk(off)),
                ("http on", on, wrk(on)),
                ("close off", off, wrk(off, connections=CLOSE_CONNECTIONS, headers=CLOSE)),
                ("close on", on, wrk(on, connections=CLOSE_CONNECTIONS, headers=CLOSE)),
            ]
        )
    section = "TLS: echo RPC and JSON view"
    for case, label in (
        ("grpc", "gRPC echo"),
        ("http", "HTTP /bench/echo"),
        ("close", f"HTTP /bench/echo, a connection per request ({CLOSE_CONNECTIONS} at once)"),
    ):
        off_load, on_load = got[f"{case} off"][0], got[f"{case} on"][0]
        b.results.add(section, f"{label}: plain", off_load)
        b.results.add(
            section, f"{label}: TLS", on_load, note=f"{ratio(on_load, off_load):.0%} of plain"
        )


def access_log(b: Bench) -> None:
    """The access log on (a line per request and RPC, to a pipe the runner drains, as a
    container runtime drains a server's output) against off, on the echo RPC and view."""
    env = sqlite_env()
    on = hybridserver("access log on", env, access_log=True)
    off = hybridserver("access log off", env)
    with servers(on, off):
        got = b.compare(
            [
                ("grpc off", off, h2load(off)),
                ("grpc on", on, h2load(on)),
                ("http off", off, wrk(off)),
                ("http on", on, wrk(on)),
            ]
        )
    section = "access log: echo RPC and JSON view"
    for proto, label in (("grpc", "gRPC echo"), ("http", "HTTP /bench/echo")):
        off_load, on_load = got[f"{proto} off"][0], got[f"{proto} on"][0]
        b.results.add(section, f"{label}: access log off", off_load)
        b.results.add(
            section,
            f"{label}: access log on",
            on_load,
            note=f"{b.paired_ratio(f'{proto} on', f'{proto} off'):.0%} of off",
        )


_MAKE_KEY = """
import django
django.setup()
from django.contrib.auth import get_user_model
from hybridserver.auth.models import APIKey
user, _ = get_user_model().objects.get_or_create(username="bench")
print(APIKey.objects.create_key(user, "bench")[1])
"""


def _api_key(env: dict[str, str]) -> str:
    done = subprocess.run(
        [PYTHON, "-c", _MAKE_KEY], cwd=REPO, env=env, capture_output=True, text=True, check=True
    )
    return done.stdout.strip().splitlines()[-1]


SOCIO_PREFIX = "/bench.socio_bench.BenchServiceController"


def peers(b: Bench) -> None:
    """hybridserver against django-grpc and django-socio-grpc, the same RPCs on each,
    under the usual load and, for the echo, one RPC at a time."""
    env = sqlite_env()
    try:
        djg, socio = django_grpc("django-grpc", env), socio_grpc("django-socio-grpc", env)
    except Exception as exc:
        b.results.missing.append(f"peers: {exc}")
        return
    djg.check_grpc = "/bench.Bench/EchoSync"  # its sync server cannot run async def
    socio.check_grpc = f"{SOCIO_PREFIX}/Echo"
    hs = hybridserver("hybridserver", env)
    single = {"clients": 1, "streams": 1}
    with servers(hs, djg, socio):
        got = b.compare(
            [
                ("echo hs", hs, h2load(hs)),
                ("echo hs-def", hs, h2load(hs, "/bench.Bench/EchoSync")),
                ("echo djg", djg, h2load(djg, "/bench.Bench/EchoSync")),
                ("echo socio", socio, h2load(socio, f"{SOCIO_PREFIX}/Echo")),
                ("orm hs", hs, h2load(hs, "/bench.Bench/GetBookAsync", GET_BOOK_1)),
                ("orm hs-def", hs, h2load(hs, "/bench.Bench/GetBookSync", GET_BOOK_1)),
                ("orm djg", djg, h2load(djg, "/bench.Bench/GetBookSync", GET_BOOK_1)),
                ("orm socio", socio, h2load(socio, f"{SOCIO_PREFIX}/GetBook", GET_BOOK_1)),
                # One RPC at a time: the latency of a single call, no concurrency.
                ("single hs", hs, h2load(hs, **single)),
                ("single hs-def", hs, h2load(hs, "/bench.Bench/EchoSync", **single)),
                ("single djg", djg, h2load(djg, "/bench.Bench/EchoSync", **single)),
                ("single socio", socio, h2load(socio, f"{SOCIO_PREFIX}/Echo", **single)),
            ]
        )
    names = {
        "hs": "hybridserver, async def",
        "hs-def": "hybridserver, plain def",
        "djg": "django-grpc grpcserver, plain def (thread-pool server)",
        "socio": "django-socio-grpc grpcrunaioserver, async action",
    }
    for what, label in (("echo", "peers: unary echo"), ("orm", "peers: one row")):
        for key, name in names.items():
            b.results.add(f"{label} ({GRPC_LOAD})", name, got[f"{what} {key}"][0])
        # Like with like: django-grpc runs plain def handlers, socio async ones.
        for mine, peer, text in (
            ("hs-def", "djg", "plain def: ahead of django-grpc"),
            ("hs", "socio", "async def: ahead of django-socio-grpc"),
        ):
            b.results.target(
                f"{what}, {text}",
                ratio(got[f"{what} {mine}"][0], got[f"{what} {peer}"][0]),
                1.0,
                ">=",
                "x",
            )
    # Reported, not a target: the targets are for the load every other comparison uses.
    section = "peers: unary echo, one RPC at a time (h2load 1 connection x 1 stream)"
    alike = {"hs-def": ("djg", "django-grpc"), "hs": ("socio", "django-socio-grpc")}
    for key, name in names.items():
        load = got[f"single {key}"][0]
        note = ""
        if key in alike:
            peer, peer_name = alike[key]
            note = f"{ratio(load, got[f'single {peer}'][0]):.2f}x {peer_name}"
        b.results.add(section, name, load, note=note)


def lab(b: Bench) -> None:
    """Why gRPC starves under HTTP load, without HTTP: see :mod:`bench.loop_lab`."""
    env = sqlite_env()
    section = "loop lab: bare grpc.aio + N busy tasks of X us per loop iteration"
    # The two limits behind one RPC per few iterations (see bench.loop_lab), each lifted
    # alone and both together, with iterations of about 1 ms.
    unlimited = [
        ("registered methods, 8 more pending requests", ["--extra-accepts", "8"]),
        ("registered methods, wake-up socket drained", ["--registered", "--drain"]),
        ("registered methods, both", ["--extra-accepts", "8", "--drain"]),
    ]
    for tasks, spin in ((0, 0), (10, 10), (10, 100)):
        kinds = [("generic handler", [])]
        if tasks == 10 and spin == 100:
            kinds += [("registered methods", ["--registered"]), *unlimited]
        for kind, flags in kinds:
            command = [PYTHON, "-m", "bench.loop_lab", "--busy-tasks", str(tasks)]
            command += ["--spin-us", str(spin), *flags]
            server = Server("lab", command, env, ready_line=BARE_READY)
            loads = [(1, 1), (1, 16), (4, 64)]
            with server:
                contenders = [(f"{c}x{s}", server, _h2load_shape(server, c, s)) for c, s in loads]
                if kind == "registered methods":
                    contenders.append(
                        (
                            "two methods",
                            server,
                            both(
                                _h2load_shape(server, 2, 32), _h2load_shape(server, 2, 32, "Echo2")
                            ),
                        )
                    )
                got = b.compare(contenders)
            for name, loads_ in got.items():
                total = sum(load.rps for load in loads_)
                b.results.add(
                    section,
                    f"N={tasks} X={spin}us ({kind}), h2load {name}",
                    loads_[0],
                    note=f"total {total:,.0f} req/s" if len(loads_) > 1 else "",
                )


def _h2load_shape(server: Server, clients: int, streams: int, method: str = "Echo"):
    def jobs(duration: float) -> list[Job]:
        return [
            H2load(
                server.grpc_target,
                f"/bench.Bench/{method}",
                ECHO_MESSAGE,
                clients=clients,
                streams=streams,
                duration=duration,
            )
        ]

    return jobs
