"""The servers under test, each a subprocess pinned to the server core.

Every server is started the way a user would start it (``hybridserver run``, ``uvicorn``,
``manage.py grpcserver``...), and is ready when a real request to it succeeds: an HTTP
GET answered 200, or a gRPC call answered OK. Ports come from the OS (port 0, or a port
found free just before).
"""

from __future__ import annotations

import collections
import os
import re
import signal
import socket
import ssl
import subprocess
import threading
import time
import urllib.request
from collections.abc import Mapping, Sequence

import grpc

from bench.load import SERVER_CPU

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PYTHON = os.path.join(REPO, ".venv", "bin", "python")
PEERS_PYTHON = os.path.join(REPO, "bench", ".venv-peers", "bin", "python")

HYBRID_READY = re.compile(
    r"hybridserver ready: HTTP on (?P<scheme>https?)://(?P<http>\S+), gRPC on (?P<grpc>\S+) "
)
BARE_READY = re.compile(r"bare grpc\.aio ready: gRPC on (?P<grpc>\S+) ")

ECHO = "/bench.Bench/Echo"


class ServerFailed(Exception):
    """A server did not start; the message carries its output."""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class Server:
    """One server process. ``http_url`` / ``grpc_target`` are set once it is ready."""

    def __init__(
        self,
        name: str,
        command: Sequence[str],
        env: Mapping[str, str],
        *,
        http_port: int | None = None,
        grpc_port: int | None = None,
        ready_line: re.Pattern[str] | None = None,
        check_grpc: str | None = ECHO,
        check_http: str | None = None,
    ) -> None:
        self.name = name
        self.command = list(command)
        self.env = dict(env)
        self.ready_line = ready_line
        self.check_grpc = check_grpc
        self.check_http = check_http
        self.http_url = f"http://127.0.0.1:{http_port}" if http_port else ""
        self.grpc_target = f"127.0.0.1:{grpc_port}" if grpc_port else ""
        #: With TLS: the CA certificate (PEM) that the readiness checks trust.
        self.ca_pem: bytes | None = None
        #: Whether the process keeps its threads: context switches are read per live
        #: thread, so those of a thread that ends during a run are lost.
        self.steady_threads = True
        # The last lines only: with the access log on, a server writes thousands a second.
        self.lines: collections.deque[str] = collections.deque(maxlen=2000)
        self.process: subprocess.Popen[str] | None = None

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    def pids(self) -> tuple[int, ...]:
        """The server's process and its children (the workers of ``--workers``)."""
        try:
            with open(f"/proc/{self.pid}/task/{self.pid}/children") as children:
                return (self.pid, *(int(pid) for pid in children.read().split()))
        except OSError:
            return (self.pid,)

    @property
    def output(self) -> str:
        return "\n".join(list(self.lines)[-60:])

    def start(self, timeout: float = 90) -> Server:
        self.process = subprocess.Popen(
            ["taskset", "-c", SERVER_CPU, *self.command],
            cwd=REPO,
            env=self.env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            start_new_session=True,
        )
        threading.Thread(target=self._read, daemon=True).start()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                time.sleep(0.2)  # let the reader catch the last lines
                raise ServerFailed(
                    f"{self.name} exited with {self.process.returncode}:\n{self.output}"
                )
            if self.ready_line is not None and not (self.grpc_target or self.http_url):
                for line in list(self.lines):
                    if match := self.ready_line.search(line):
                        groups = match.groupdict()
                        if groups.get("http"):
                            self.http_url = f"{groups.get('scheme', 'http')}://{groups['http']}"
                        if groups.get("grpc"):
                            self.grpc_target = groups["grpc"]
            elif self._answers():
                return self
            time.sleep(0.2)
        self.stop()
        raise ServerFailed(f"{self.name} was not ready after {timeout:g}s:\n{self.output}")

    def _read(self) -> None:
        assert self.process is not None and self.process.stdout is not None
        for line in self.process.stdout:
            self.lines.append(line.rstrip("\n"))

    def _answers(self) -> bool:
        try:
            if self.check_http:
                tls = None
                if self.ca_pem is not None:
                    tls = ssl.create_default_context(cadata=self.ca_pem.decode())
                url = self.http_url + self.check_http
                with urllib.request.urlopen(url, timeout=5, context=tls) as r:
                    if r.status != 200:
                        return False
            if self.check_grpc:
                check_rpc(self.grpc_target, self.check_grpc, b"\n\x05hello", ca_pem=self.ca_pem)
        except (OSError, grpc.RpcError):
            return False
        return True

    def rss_kib(self) -> int:
        """Resident memory of the server process, KiB."""
        with open(f"/proc/{self.pid}/status") as status:
            for line in status:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
        raise RuntimeError("no VmRSS")

    def stop(self) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(20)
        except subprocess.TimeoutExpired:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(10)

    def __enter__(self) -> Server:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()


def check_rpc(
    target: str,
    method: str,
    message: bytes,
    metadata: Sequence = (),
    *,
    ca_pem: bytes | None = None,
) -> bytes:
    """One unary call with a real gRPC client (over TLS, trusting ``ca_pem``, if given);
    raises grpc.RpcError unless it is OK."""
    if ca_pem is None:
        channel = grpc.insecure_channel(target)
    else:
        channel = grpc.secure_channel(target, grpc.ssl_channel_credentials(ca_pem))
    with channel:
        call = channel.unary_unary(method)
        return call(message, timeout=10, metadata=list(metadata) or None, wait_for_ready=False)


def bench_env(database_url: str, **extra: str) -> dict[str, str]:
    """The environment of every server: the bench settings and the given database."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("HYBRIDSERVER_")}
    env.update(
        DJANGO_SETTINGS_MODULE="bench.settings",
        DATABASE_URL=database_url,
        # Persistent connections, as a production deployment would keep them.
        DJANGO_CONN_MAX_AGE="60",
        PYTHONUNBUFFERED="1",
        PYTHONPATH=REPO,
    )
    env.update(extra)
    return env


def hybridserver(
    name: str,
    env: Mapping[str, str],
    *args: str,
    access_log: bool = False,
    tls: tuple[str, str, bytes] | None = None,
) -> Server:
    """``hybridserver run project.asgi`` on free ports; the access log off unless asked.
    ``tls``: (certificate file, key file, CA certificate PEM) to serve both over TLS."""
    command = [PYTHON, "-m", "hybridserver", "run", "project.asgi"]
    command += ["--port", "0", "--grpc-port", "0"]
    command += ["--access-log" if access_log else "--no-access-log", *args]
    server = Server(name, command, env, ready_line=HYBRID_READY, check_http="/bench/echo")
    if tls is not None:
        certfile, keyfile, server.ca_pem = tls
        server.command += ["--ssl-certfile", certfile, "--ssl-keyfile", keyfile]
    return server


def uvicorn(name: str, env: Mapping[str, str]) -> Server:
    """Plain uvicorn serving the same Django application (uvloop and httptools, as
    hybridserver; Django does not speak the lifespan protocol)."""
    port = free_port()
    command = [PYTHON, "-m", "uvicorn", "project.asgi:application", "--port", str(port)]
    command += ["--no-access-log", "--lifespan", "off", "--loop", "uvloop", "--http", "httptools"]
    server = Server(name, command, env, http_port=port, check_grpc=None, check_http="/bench/echo")
    server.steady_threads = False  # Django's default: a new thread for each request's sync code
    return server


def bare_grpc(name: str, env: Mapping[str, str]) -> Server:
    """A grpc.aio server with the same servicer and nothing else (:mod:`bench.bare_grpc`)."""
    command = [PYTHON, "-m", "bench.bare_grpc", "--port", "0"]
    return Server(name, command, env, ready_line=BARE_READY)


def python_for_peers() -> str:
    if not os.path.exists(PEERS_PYTHON):
        raise ServerFailed("bench/.venv-peers is missing: run bench/run peers")
    return PEERS_PYTHON


def django_grpc(name: str, env: Mapping[str, str]) -> Server:
    """django-grpc's ``manage.py grpcserver`` (its default: grpc's thread-pool server)."""
    port = free_port()
    peers_env = {**env, "DJANGO_SETTINGS_MODULE": "bench.peers.django_grpc_settings"}
    command = [python_for_peers(), "manage.py", "grpcserver", "--port", str(port)]
    command += ["--max_workers", "40"]
    return Server(name, command, peers_env, grpc_port=port)


def socio_grpc(name: str, env: Mapping[str, str]) -> Server:
    """django-socio-grpc's ``manage.py grpcrunaioserver``."""
    port = free_port()
    peers_env = {**env, "DJANGO_SETTINGS_MODULE": "bench.peers.socio_settings"}
    command = [python_for_peers(), "manage.py", "grpcrunaioserver", f"127.0.0.1:{port}"]
    command += ["--max-workers", "40"]
    return Server(name, command, peers_env, grpc_port=port)
