"""Run a live hybridserver inside a test, in the test's own event loop.

    async with LiveServer("project.asgi") as server:
        async with httpx.AsyncClient(base_url=server.http_url) as client: ...
        async with grpc.aio.insecure_channel(server.grpc_target) as channel: ...

Both ports are chosen by the OS (port 0); entering waits for the server's readiness
event, never for a fixed delay.
"""

from __future__ import annotations

import asyncio
import dataclasses
import os
import re
import signal
import subprocess
import sys
import threading
import time
from typing import Any

from hybridserver.cli import import_app
from hybridserver.config import Config
from hybridserver.lifespan import HybridApp
from hybridserver.server import HybridServer, UvicornConfig, bind_http


class LiveServer:
    """An in-process hybridserver on free ports. Options are :class:`Config` fields."""

    def __init__(self, app: str = "project.asgi", **options: Any) -> None:
        from django.conf import settings

        # Resolved as `hybridserver run` resolves it, less the environment.
        target = import_app(app)
        config = Config.resolve(
            target, user_settings=getattr(settings, "HYBRIDSERVER", {}), environ={}, flags={}
        )
        options.setdefault("host", "127.0.0.1")
        options.setdefault("port", 0)
        options.setdefault("grpc_port", 0)
        self.config = dataclasses.replace(config, **options)
        self.server: HybridServer | None = None
        self._task: asyncio.Task[None] | None = None

    @property
    def app(self) -> HybridApp:
        assert self.server is not None
        return self.server.app

    @property
    def http_url(self) -> str:
        assert self.server is not None
        return f"http://127.0.0.1:{self.server.http_port}"

    @property
    def grpc_target(self) -> str:
        assert self.server is not None
        return f"127.0.0.1:{self.server.grpc_port}"

    async def __aenter__(self) -> LiveServer:
        sock = bind_http(self.config)
        # Logging stays as the test runner set it up, so caplog sees every record.
        uv_config = UvicornConfig(self.config, log_config=None)
        self.server = HybridServer(uv_config, handle_signals=False)
        self._task = asyncio.create_task(self.server.serve(sockets=[sock]))
        ready = asyncio.create_task(self.server.ready.wait())
        await asyncio.wait({self._task, ready}, return_when=asyncio.FIRST_COMPLETED)
        if not self.server.ready.is_set():
            ready.cancel()
            sock.close()
            await self._task  # re-raises an unexpected error
            reason = self.server.app.startup_failure or "see the log"
            raise RuntimeError(f"hybridserver did not start: {reason}")
        self._sock = sock
        return self

    async def stop(self) -> None:
        """Shut down gracefully, as on SIGTERM, and wait until the server has stopped."""
        assert self.server is not None and self._task is not None
        if not self._task.done():
            self.server.handle_exit(15, None)
        try:
            await self._task
        finally:
            self._sock.close()

    async def __aexit__(self, *exc_info: Any) -> None:
        await self.stop()


READY_PATTERN = re.compile(
    r"hybridserver ready: HTTP on (?P<scheme>https?)://(?P<http>\S+), gRPC on (?P<grpc>\S+) "
    r"\(pid (?P<pid>\d+), (?P<loop>\w+) loop\)"
)


class ServerProcess:
    """``hybridserver run`` in a subprocess, on free ports unless told otherwise.

    Entering waits for the ready line (or for the process to exit, then raises
    :class:`ServerExited` with its output). ``output`` collects stdout and stderr.
    """

    def __init__(
        self,
        *args: str,
        app: str | None = "project.asgi",
        env: dict[str, str] | None = None,
        cwd: str | None = None,
        ready_timeout: float = 30,
        command: list[str] | None = None,
    ) -> None:
        self.command = [*(command or [sys.executable, "-m", "hybridserver", "run"])]
        if app is not None:  # None: ``command`` is complete as given
            self.command.append(app)
            if "--port" not in args:
                self.command += ["--port", "0"]
            if "--grpc-port" not in args:
                self.command += ["--grpc-port", "0"]
        self.command += list(args)
        self.env = {**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})}
        self.cwd = cwd
        self.ready_timeout = ready_timeout
        self.lines: list[str] = []
        self.process: subprocess.Popen[str] | None = None
        self.http_address = self.grpc_address = ""
        self.scheme = "http"
        self.loop = ""
        self._new_line = threading.Condition()

    @property
    def output(self) -> str:
        with self._new_line:
            return "\n".join(self.lines)

    @property
    def http_url(self) -> str:
        return f"{self.scheme}://{self.http_address}"

    @property
    def grpc_target(self) -> str:
        return self.grpc_address

    def start(self) -> subprocess.Popen[str]:
        self.process = subprocess.Popen(
            self.command,
            env=self.env,
            cwd=self.cwd,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        threading.Thread(target=self._read, daemon=True).start()
        return self.process

    def _read(self) -> None:
        assert self.process is not None and self.process.stdout is not None
        for line in self.process.stdout:
            with self._new_line:
                self.lines.append(line.rstrip("\n"))
                self._new_line.notify_all()
        with self._new_line:
            self.lines.append("")  # end of output
            self._new_line.notify_all()
            self._eof = True

    def wait_for_line(
        self, pattern: str | re.Pattern[str], timeout: float = 30, *, count: int = 1
    ) -> re.Match[str]:
        """Block until ``count`` lines of output match (from the first line on); return
        the last match. Raise ServerExited or TimeoutError."""
        regex = re.compile(pattern) if isinstance(pattern, str) else pattern
        deadline = time.monotonic() + timeout
        seen = 0
        with self._new_line:
            while True:
                for line in self.lines[seen:]:
                    if match := regex.search(line):
                        count -= 1
                        if count <= 0:
                            return match
                seen = len(self.lines)
                if getattr(self, "_eof", False):
                    raise ServerExited(self.wait(), self.output)
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise TimeoutError(f"no line matching {regex.pattern!r}:\n{self.output}")
                self._new_line.wait(remaining)

    def wait(self, timeout: float = 60) -> int:
        assert self.process is not None
        return self.process.wait(timeout)

    def signal(self, sig: int) -> None:
        assert self.process is not None
        self.process.send_signal(sig)

    def __enter__(self) -> ServerProcess:
        self.start()
        try:
            match = self.wait_for_line(READY_PATTERN, self.ready_timeout)
        except BaseException:
            self.kill()
            raise
        self.http_address, self.grpc_address = match["http"], match["grpc"]
        self.scheme = match["scheme"]
        self.loop = match["loop"]
        return self

    def kill(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait(10)

    def __exit__(self, *exc_info: Any) -> None:
        if self.process is not None and self.process.poll() is None:
            self.signal(signal.SIGTERM)
            try:
                self.process.wait(60)
            except subprocess.TimeoutExpired:
                self.kill()


class ServerExited(Exception):
    """The server process ended; ``returncode`` and ``output`` say how."""

    def __init__(self, returncode: int, output: str) -> None:
        super().__init__(f"hybridserver exited with {returncode}:\n{output}")
        self.returncode = returncode
        self.output = output
