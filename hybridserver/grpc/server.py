"""The grpc.aio server of one process: servicers, interceptors, reflection and health."""

from __future__ import annotations

import asyncio
import errno
import logging
import os
import socket
from collections.abc import Callable, Sequence
from typing import Any

import grpc
from grpc_health.v1 import health_pb2_grpc
from grpc_reflection.v1alpha import reflection, reflection_pb2_grpc

from hybridserver.config import Config, format_address, import_setting
from hybridserver.fairness import GrpcActivity
from hybridserver.grpc.handlers import adapt_handler
from hybridserver.grpc.health import SERVICE_NAME as HEALTH_SERVICE
from hybridserver.grpc.health import SERVING, HealthServicer
from hybridserver.threads import ThreadPool

logger = logging.getLogger("hybridserver.error")

# gRPC core queues calls that arrive faster than the server takes them, and past 1,000
# queued calls it starts refusing them at random with CANCELLED. A burst of a few
# thousand streams is normal traffic; overload is GRPC_MAX_CONCURRENT_RPCS's job.
DEFAULT_OPTIONS: dict[str, Any] = {
    "grpc.server.max_pending_requests": 1_000_000,
    "grpc.server.max_pending_requests_hard_limit": 1_000_000,
    # gRPC shares a port with any other process that asks, by default: a second
    # server on the same port must fail instead.
    "grpc.so_reuseport": 0,
}


#: Seconds gRPC core gets to finish a graceful stop by itself once every RPC has ended,
#: before its remaining connections are closed (see GrpcServer._close_when_rpcs_end).
SETTLE = 1.0


class StartupError(Exception):
    """The gRPC server could not start; the message is the one-line reason."""


class MethodTable(grpc.GenericRpcHandler):
    """Every method added as a "registered" one, found with one dict lookup.

    grpc.aio gives each registered method its own pending request for the next call and
    waits on all of them at once (``asyncio.wait``) for every RPC it accepts, so every
    registered method adds to the cost of every RPC, whatever its method: on a bare
    grpc.aio echo server, 30 registered methods cost 4% of its throughput and 100 cost
    13%. Added as the server's first generic handler instead, they are found before any
    other generic handler, as registered methods are, with one dict lookup, and grpc.aio
    waits on one pending request for all of them.
    """

    def __init__(self) -> None:
        self.handlers: dict[str, grpc.RpcMethodHandler] = {}

    def add(self, service_name: str, handlers: dict[str, grpc.RpcMethodHandler]) -> None:
        for name, handler in handlers.items():
            self.handlers[f"/{service_name}/{name}"] = handler

    def service(
        self, handler_call_details: grpc.HandlerCallDetails
    ) -> grpc.RpcMethodHandler | None:
        return self.handlers.get(handler_call_details.method)


class _TableServer:
    """A server for a generated ``add_*_to_server`` function whose methods go into the
    method table as they are, not adapted (the health and reflection services)."""

    def __init__(self, server: grpc.aio.Server, table: MethodTable) -> None:
        self._server = server
        self._table = table

    def add_generic_rpc_handlers(self, handlers: Sequence[grpc.GenericRpcHandler]) -> None:
        self._server.add_generic_rpc_handlers(handlers)

    def add_registered_method_handlers(
        self, service_name: str, method_handlers: dict[str, grpc.RpcMethodHandler]
    ) -> None:
        self._table.add(service_name, method_handlers)


class ServicerRegistry:
    """What ``register(server)`` callables receive.

    It takes handlers the way a grpc server does (the generated ``add_*_to_server``
    functions call it) and adapts every method on the way in. Registered methods go
    into ``table`` (:class:`MethodTable`).
    """

    def __init__(
        self,
        server: grpc.aio.Server,
        pool: ThreadPool,
        table: MethodTable,
        *,
        auth: bool = True,
        activity: GrpcActivity | None = None,
    ) -> None:
        self._server = server
        self._table = table
        self._pool = pool
        self._auth = auth
        self._activity = activity
        self.service_names: list[str] = []

    def _adapt(self, handler: grpc.RpcMethodHandler, method: str) -> grpc.RpcMethodHandler:
        return adapt_handler(handler, method, self._pool, auth=self._auth, activity=self._activity)

    def add_generic_rpc_handlers(self, handlers: Sequence[grpc.GenericRpcHandler]) -> None:
        adapted = []
        for handler in handlers:
            service_name = getattr(handler, "service_name", None)
            if callable(service_name) and service_name() not in self.service_names:
                self.service_names.append(service_name())
            adapted.append(_AdaptedGenericHandler(handler, self._adapt))
        self._server.add_generic_rpc_handlers(adapted)

    def add_registered_method_handlers(
        self, service_name: str, method_handlers: dict[str, grpc.RpcMethodHandler]
    ) -> None:
        if service_name not in self.service_names:
            self.service_names.append(service_name)
        self._table.add(
            service_name,
            {
                name: self._adapt(handler, f"/{service_name}/{name}")
                for name, handler in method_handlers.items()
            },
        )

    def __getattr__(self, name: str) -> Any:
        raise AttributeError(f"register(server) may only add servicers; hybridserver owns {name!r}")


class _AdaptedGenericHandler(grpc.GenericRpcHandler):
    def __init__(
        self,
        inner: grpc.GenericRpcHandler,
        adapt: Callable[[grpc.RpcMethodHandler, str], grpc.RpcMethodHandler],
    ) -> None:
        self._inner = inner
        self._adapt = adapt
        self._adapted: dict[str, tuple[grpc.RpcMethodHandler, grpc.RpcMethodHandler]] = {}

    def service(
        self, handler_call_details: grpc.HandlerCallDetails
    ) -> grpc.RpcMethodHandler | None:
        handler = self._inner.service(handler_call_details)
        if handler is None:
            return None
        method = handler_call_details.method
        cached = self._adapted.get(method)
        if cached is None or cached[0] is not handler:
            cached = self._adapted[method] = (handler, self._adapt(handler, method))
        return cached[1]


class GrpcServer:
    """Builds, starts and stops the process's grpc.aio server. Create it inside the loop."""

    def __init__(
        self, config: Config, pool: ThreadPool, activity: GrpcActivity | None = None
    ) -> None:
        self.config = config
        self.pool = pool
        #: Counts the RPCs started, for HTTP admission control (hybridserver.fairness).
        self.activity = activity
        self.server: grpc.aio.Server | None = None
        self.health: HealthServicer | None = None
        self.service_names: list[str] = []
        #: Every registered method (see MethodTable); filled by start().
        self.table = MethodTable()
        self.port: int | None = None
        self._stopping: asyncio.Future[None] | None = None
        # grpc.aio's task that accepts calls and the file of its code, if this grpc.aio
        # has the one this module knows (see _close_when_rpcs_end).
        self._accept_loop: tuple[asyncio.Task[Any], str] | None = None

    def _options(self) -> list[tuple[str, Any]]:
        options = dict(DEFAULT_OPTIONS)
        if self.config.workers > 1:
            # Workers share the port the supervisor reserved (see hybridserver.workers).
            options["grpc.so_reuseport"] = 1
        options.update(self.config.grpc_options)
        return list(options.items())

    async def start(self) -> int:
        """Register everything, bind the port and start serving. Returns the bound port."""
        config = self.config
        interceptors = [_load(path, "GRPC_INTERCEPTORS")() for path in config.grpc_interceptors]
        self.server = server = grpc.aio.server(
            interceptors=interceptors,
            options=self._options(),
            maximum_concurrent_rpcs=config.grpc_max_concurrent_rpcs,
        )
        table = self.table
        server.add_generic_rpc_handlers((table,))
        registry = ServicerRegistry(
            server, self.pool, table, auth=config.grpc_auth, activity=self.activity
        )
        for path in config.grpc_servicers:
            register = _load(path, "GRPC_SERVICERS")
            try:
                register(registry)
            except Exception as exc:
                raise StartupError(
                    f"HYBRIDSERVER['GRPC_SERVICERS']: {path!r} failed: {type(exc).__name__}: {exc}"
                ) from exc
        self.service_names = list(registry.service_names)

        # Health and reflection go into the method table too, so that grpc.aio keeps a
        # single pending request for the next call. When the server stops, grpc.aio
        # cancels those of its pending requests it has not yet seen complete; with more
        # than one, a call that gRPC core had just matched to one of them could be left
        # unanswered until the grace period ends.
        as_is: Any = _TableServer(server, table)
        if config.grpc_health:
            self.health = HealthServicer()
            health_pb2_grpc.add_HealthServicer_to_server(self.health, as_is)
            self.service_names.append(HEALTH_SERVICE)
        if config.grpc_reflection:
            self.service_names.append(reflection.SERVICE_NAME)
            reflection_pb2_grpc.add_ServerReflectionServicer_to_server(
                reflection.aio.ReflectionServicer(self.service_names), as_is
            )

        host = config.effective_grpc_host
        address = format_address(host, config.grpc_port)
        try:
            if config.tls:
                self.port = server.add_secure_port(address, _credentials(config))
            else:
                self.port = server.add_insecure_port(address)
        except RuntimeError:
            problem = _bind_problem(host, config.grpc_port)
            raise StartupError(
                f"cannot bind gRPC port {config.grpc_port} on {host}: {problem}"
            ) from None
        started_before = asyncio.all_tasks()
        await server.start()
        self._accept_loop = _accept_loop(asyncio.all_tasks() - started_before)

        if self.health is not None:
            for name in ["", *self.service_names]:
                await self.health.set(name, SERVING)
        return self.port

    def begin_shutdown(self) -> asyncio.Future[None]:
        """Turn health NOT_SERVING, refuse new RPCs, let running ones finish. Idempotent."""
        if self._stopping is None:
            self._stopping = asyncio.ensure_future(self._shutdown())
        return self._stopping

    async def _shutdown(self) -> None:
        if self.health is not None:
            await self.health.enter_graceful_shutdown()
        if self.server is None:
            return
        stopping = asyncio.ensure_future(self.server.stop(self.config.graceful_timeout))
        try:
            await self._close_when_rpcs_end(stopping)
            await stopping
        except BaseException:
            stopping.cancel()
            raise

    async def _close_when_rpcs_end(self, stopping: asyncio.Future[None]) -> None:
        """End a graceful stop ``SETTLE`` seconds after the last RPC, not at the end of
        the grace period, when all that gRPC core still waits for is no RPC's.

        grpc.aio's stop waits for gRPC core, which waits for every call and connection
        to end. Two things can hold it with no RPC left to finish:

        - a connection whose peer does not answer the PING that a graceful GOAWAY sends
          (a client gone without closing its connection, a stalled proxy): gRPC core
          waits 20 s for it;
        - a call that arrived just as the server began to stop: gRPC core can queue it
          for the application after emptying that queue for the shutdown (the new call
          checks that the server is not stopping, then joins the queue; the shutdown
          empties the queue in between), and nothing takes it from there. Seen once in
          about 700 stops under a write load.

        No handler has run for either, so closing them loses nothing; the client of
        such a call sees UNAVAILABLE, as it would had it come a moment later.
        """
        if self._accept_loop is None:  # not a grpc.aio this code knows: wait as it does
            return
        accept_loop, source = self._accept_loop
        # stop() ends the accept loop first; after that no RPC task is created.
        await asyncio.wait({accept_loop, stopping}, return_when=asyncio.FIRST_COMPLETED)
        if stopping.done():
            return
        rpcs = _rpc_tasks(source)
        if rpcs:
            ended = asyncio.ensure_future(asyncio.wait(rpcs))
            await asyncio.wait({ended, stopping}, return_when=asyncio.FIRST_COMPLETED)
            ended.cancel()
        if stopping.done():
            return
        await asyncio.wait({stopping}, timeout=SETTLE)
        if not stopping.done():
            logger.info("Every RPC has ended: closing gRPC's remaining connections")
            assert self.server is not None
            await self.server.stop(None)

    async def stop(self) -> None:
        """Shut down and wait until every RPC has finished or the grace period is over."""
        await self.begin_shutdown()

    async def abort(self) -> None:
        """Cancel every RPC now."""
        if self.server is not None:
            await self.server.stop(None)


def _coroutine_code(task: asyncio.Task[Any]) -> Any:
    return getattr(task.get_coro(), "cr_code", None)


def _accept_loop(tasks: set[asyncio.Task[Any]]) -> tuple[asyncio.Task[Any], str] | None:
    """grpc.aio's task that accepts calls, among the tasks its server's start() began,
    and the source file of grpc.aio's server code."""
    for task in tasks:
        code = _coroutine_code(task)
        if code is not None and code.co_name == "_server_main_loop":
            return task, code.co_filename
    return None


def _rpc_tasks(source: str) -> set[asyncio.Task[Any]]:
    """The live tasks that run grpc.aio's server code (from ``source``). Once the accept
    loop has ended, each is an RPC's, until gRPC core has finished the call. (Another
    grpc.aio server in the same loop would add its own: waited for too.)"""
    return {
        task
        for task in asyncio.all_tasks()
        if (code := _coroutine_code(task)) is not None and code.co_filename == source
    }


def _credentials(config: Config) -> grpc.ServerCredentials:
    assert config.ssl_certfile is not None and config.ssl_keyfile is not None
    with open(config.ssl_keyfile, "rb") as key, open(config.ssl_certfile, "rb") as cert:
        return grpc.ssl_server_credentials([(key.read(), cert.read())])


def _load(path: str, setting: str) -> Any:
    try:
        return import_setting(path, f"HYBRIDSERVER[{setting!r}]")
    except ImportError as exc:
        raise StartupError(str(exc)) from None


def _bind_problem(host: str, port: int) -> str:
    """Why gRPC could not bind: gRPC only says it failed, so ask the OS the same question."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except socket.gaierror as exc:
        return f"cannot resolve {host!r} ({exc.strerror})"
    for family, kind, proto, _, address in infos:
        with socket.socket(family, kind, proto) as probe:
            try:
                probe.bind(address)
            except OSError as exc:
                if exc.errno == errno.EADDRINUSE:
                    return "address already in use"
                return exc.strerror or os.strerror(exc.errno or 0)
    return "the address is not available"
