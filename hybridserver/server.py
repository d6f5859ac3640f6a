"""Running both servers in one process: uvicorn for HTTP, grpc.aio beside it in the same loop.

uvicorn's ``Server`` runs the loop, the HTTP listener and the ASGI lifespan. The
subclass here adds what a two-protocol server needs from signals: the first SIGTERM or
SIGINT stops *both* protocols from taking new work at once (uvicorn alone would only
reach the gRPC server after HTTP has drained), a second one forces exit, and a graceful
stop exits 0 instead of re-raising the signal.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import os
import signal
import socket
import threading
from collections.abc import Generator
from types import FrameType
from typing import Any

import uvicorn
from uvicorn.server import HANDLED_SIGNALS

from hybridserver.config import Config, format_address
from hybridserver.lifespan import HybridApp
from hybridserver.logging import ACCESS_LOGGER, log_config

logger = logging.getLogger("hybridserver.error")

EXIT_OK = 0
EXIT_ERROR = 1
EXIT_STARTUP_FAILED = 3  # uvicorn's code for a failed startup
EXIT_FORCED = 130


class BindError(Exception):
    """A port could not be bound; the message names it."""


class UvicornConfig(uvicorn.Config):
    """uvicorn's Config, carrying hybridserver's. It wraps the loaded app in HybridApp, so
    that a reload child, which unpickles this config and loads the app itself, does too."""

    def __init__(self, hybrid: Config, **kwargs: Any) -> None:
        self.hybrid = hybrid
        kwargs.setdefault("log_config", log_config())
        super().__init__(
            hybrid.app,
            log_level=hybrid.log_level,
            access_log=hybrid.access_log,
            lifespan="on",
            timeout_graceful_shutdown=hybrid.graceful_timeout,
            timeout_keep_alive=hybrid.timeout_keep_alive,
            ssl_certfile=hybrid.ssl_certfile,
            ssl_keyfile=hybrid.ssl_keyfile,
            **kwargs,
        )

    def load(self) -> None:
        super().load()
        self.hybrid_app = HybridApp(self.loaded_app, self.hybrid)
        self.loaded_app = self.hybrid_app

    def configure_logging(self) -> None:
        super().configure_logging()
        level = uvicorn.config.LOG_LEVELS[self.hybrid.log_level]
        logging.getLogger("hybridserver").setLevel(level)
        logging.getLogger(ACCESS_LOGGER).disabled = not self.hybrid.access_log


class HybridServer(uvicorn.Server):
    config: UvicornConfig

    def __init__(self, config: UvicornConfig, *, handle_signals: bool = True) -> None:
        super().__init__(config)
        self.grpc_port: int | None = None
        self.http_port: int | None = None
        #: Set once both ports are bound and the ready line is logged.
        self.ready = asyncio.Event()
        self._handle_signals = handle_signals
        #: The exit status uvicorn gave a failed startup.
        self.startup_exit = EXIT_STARTUP_FAILED
        self._loop: asyncio.AbstractEventLoop | None = None

    @property
    def app(self) -> HybridApp:
        return self.config.hybrid_app

    async def serve(self, sockets: list[socket.socket] | None = None) -> None:
        self._loop = asyncio.get_running_loop()
        await super().serve(sockets)

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        try:
            await super().startup(sockets)
        except SystemExit as exc:
            # uvicorn leaves a failed startup with sys.exit(), which, raised inside the
            # loop, would escape every caller: an in-process server's test as well. Stop
            # here instead; exit_status() gives the process the same code.
            self.should_exit = True
            self.startup_exit = exc.code if isinstance(exc.code, int) else EXIT_STARTUP_FAILED
            return
        if self.should_exit or not self.started:
            return
        hybrid = self.config.hybrid
        self.http_port = self.servers[0].sockets[0].getsockname()[1]
        assert self.app.grpc is not None
        self.grpc_port = self.app.grpc.port
        loop = type(asyncio.get_running_loop()).__module__.partition(".")[0]
        logger.info(
            "hybridserver ready: HTTP on %s://%s, gRPC on %s (pid %d, %s loop)",
            "https" if hybrid.tls else "http",
            format_address(hybrid.host, self.http_port),
            format_address(hybrid.effective_grpc_host, self.grpc_port or 0),
            os.getpid(),
            loop,
        )
        self.ready.set()

    @contextlib.contextmanager
    def capture_signals(self) -> Generator[None, None, None]:
        # uvicorn re-raises a caught SIGTERM after a graceful shutdown, which makes the
        # exit status 143; a clean drain must exit 0.
        if not self._handle_signals or threading.current_thread() is not threading.main_thread():
            yield
            return
        original = {sig: signal.signal(sig, self.handle_exit) for sig in HANDLED_SIGNALS}
        try:
            yield
        finally:
            for sig, handler in original.items():
                signal.signal(sig, handler)

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        if self.should_exit:
            self.force_exit = True
            logger.warning("Second signal: forcing exit")
            self._call_soon(self._abort_grpc)
            return
        # Set before logging: a second signal may interrupt this handler (Python runs
        # handlers between bytecodes, nested ones too) as soon as the line is written,
        # and must find the first one counted.
        self.should_exit = True
        logger.info("Shutting down: no new requests or RPCs; waiting for those in flight")
        self._call_soon(self._begin_shutdown)

    def _call_soon(self, callback: Any) -> None:
        if self._loop is not None and not self._loop.is_closed():
            self._loop.call_soon_threadsafe(callback)

    def _begin_shutdown(self) -> None:
        if hasattr(self.config, "hybrid_app"):
            self.app.begin_shutdown()

    def _abort_grpc(self) -> None:
        if hasattr(self.config, "hybrid_app") and self.app.grpc is not None:
            self._abort_task = asyncio.ensure_future(self.app.grpc.abort())


def bind_socket(name: str, host: str, port: int, *, reuse_port: bool = False) -> socket.socket:
    """Bind (without listening) a TCP socket before anything starts, so that a busy port
    or an unknown host is a one-line BindError naming the ``name`` ("HTTP", "gRPC") port."""
    try:
        family, kind, proto, _, address = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0]
    except socket.gaierror as exc:
        raise BindError(f"cannot resolve {name} host {host!r}: {exc.strerror}") from None
    sock = socket.socket(family, kind, proto)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    if reuse_port:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    try:
        sock.bind(address)
    except OSError as exc:
        sock.close()
        raise BindError(
            f"cannot bind {name} port {port} on {host}: {(exc.strerror or str(exc)).lower()}"
        ) from None
    sock.set_inheritable(True)
    return sock


def bind_http(config: Config) -> socket.socket:
    """The HTTP socket, bound before anything starts and handed to uvicorn."""
    return bind_socket("HTTP", config.host, config.port)


def run(config: Config) -> int:
    """Serve until stopped; return the process exit status."""
    if config.workers > 1 and config.reload:
        raise BindError("--reload and --workers do not go together: pick one")
    sock = bind_http(config)
    # grpc binds its port itself, at startup. Bind it here first, so that a busy port is
    # the same one-line error as a busy HTTP port (taken in the moment between, it is
    # still reported, by the failed startup). Workers share the port (see
    # hybridserver.workers): for them the socket stays open as a reservation, which also
    # turns port 0 into one real port for all of them.
    try:
        grpc_sock = bind_socket(
            "gRPC", config.effective_grpc_host, config.grpc_port, reuse_port=config.workers > 1
        )
    except BindError:
        sock.close()
        raise
    reservation = None
    if config.workers > 1:
        reservation = grpc_sock
        config = dataclasses.replace(config, grpc_port=grpc_sock.getsockname()[1])
    else:
        grpc_sock.close()
    uv_config = UvicornConfig(
        config,
        reload=config.reload,
        reload_includes=["*.py", "*.proto"] if config.reload else None,
    )
    server = HybridServer(uv_config)
    try:
        if config.reload:
            from uvicorn.supervisors import ChangeReload

            ChangeReload(uv_config, target=server.run, sockets=[sock]).run()
            return EXIT_OK
        if config.workers > 1:
            from hybridserver.workers import Supervisor

            return Supervisor(uv_config, [sock]).run()
        server.run(sockets=[sock])
    finally:
        sock.close()
        if reservation is not None:
            reservation.close()
    return exit_status(server)


def exit_status(server: HybridServer) -> int:
    """The exit status of a process whose server has stopped."""
    if server.force_exit:
        return EXIT_FORCED
    return EXIT_OK if server.started else server.startup_exit
