"""The ASGI application hybridserver runs: Django's, wrapped.

This is the one place that knows the two servers start and stop together. Django's
``ASGIHandler`` does not speak the lifespan protocol; this wrapper does, and starts the
gRPC server inside the running loop at ``lifespan.startup`` and stops it at
``lifespan.shutdown``. It also answers the HTTP health path before Django's URLconf,
gives every HTTP request the same pooled-thread context an RPC gets, holds HTTP
requests back when they would crowd gRPC out of the loop (:mod:`hybridserver.fairness`),
has Django's middleware run in fewer thread hops (:mod:`hybridserver.middleware`), and
has Django's handler free each request's objects when it ends
(:mod:`hybridserver.disconnect`).
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Callable
from typing import Any

from asgiref.sync import sync_to_async
from asgiref.typing import ASGIApplication, ASGIReceiveCallable, ASGISendCallable, Scope

from hybridserver.config import Config
from hybridserver.disconnect import quiet_disconnects
from hybridserver.fairness import GrpcActivity, HttpAdmission, install_task_factory
from hybridserver.grpc.server import GrpcServer, StartupError
from hybridserver.middleware import coalesce, find_django_handler
from hybridserver.threads import ThreadPool, prime_context

logger = logging.getLogger("hybridserver.error")


class HybridApp:
    """Django's ASGI application plus a gRPC server that shares its loop and lifetime."""

    def __init__(self, app: ASGIApplication | Any, config: Config) -> None:
        self.app = app
        self.config = config
        self.pool = ThreadPool(config.threads)
        # uvicorn builds the app inside its serving task, the context that every
        # connection, request and RPC task is copied from.
        prime_context()
        #: HTTP admission control that keeps gRPC served when HTTP saturates the loop
        #: (``LOOP_FAIRNESS``, ``GRPC_PACING``; see :mod:`hybridserver.fairness`).
        self.admission = (
            HttpAdmission(GrpcActivity(), pacing=config.grpc_pacing)
            if config.loop_fairness
            else None
        )
        handler = find_django_handler(app)
        if handler is not None:
            # Frees each request's objects when it ends rather than at the next garbage
            # collection (see hybridserver.disconnect).
            quiet_disconnects(handler)
            if config.coalesce_middleware:
                saved = coalesce(handler)
                logger.debug("Middleware coalesced: up to %d thread hops fewer per request", saved)
        self.grpc: GrpcServer | None = None
        #: Why the lifespan startup failed, as uvicorn was told; None if it did not.
        self.startup_failure: str | None = None
        # When the grace period of a shutdown ends (loop time), once one has begun.
        self._deadline: float | None = None
        # Puts the loop's task factory back (see hybridserver.fairness).
        self._uninstall_task_factory: Callable[[], None] | None = None

    async def __call__(
        self, scope: Scope, receive: ASGIReceiveCallable, send: ASGISendCallable
    ) -> None:
        if scope["type"] == "lifespan":
            await self._lifespan(receive, send)
        elif scope["type"] == "http" and scope["path"] == self.config.http_health_path:
            await self._health(send)
        elif scope["type"] == "http" and self.admission is not None:
            ticket = await self.admission.enter()
            try:
                async with self.pool.request_context() as lease:
                    ticket.work = lease
                    await self.admission.timed(self.app(scope, receive, send))
            finally:
                self.admission.leave(ticket)
        else:
            async with self.pool.request_context():
                await self.app(scope, receive, send)

    @property
    def shutting_down(self) -> bool:
        return self._deadline is not None

    async def startup(self) -> None:
        """Start the gRPC server. Raises StartupError with a one-line reason."""
        activity = self.admission.grpc if self.admission is not None else None
        self.grpc = GrpcServer(self.config, self.pool, activity)
        await self.grpc.start()
        # Only once started: a failed startup gets no shutdown to take it off the loop.
        if self.admission is not None:
            self._uninstall_task_factory = install_task_factory(asyncio.get_running_loop())

    def begin_shutdown(self) -> None:
        """First signal: stop taking new work on both protocols, now. Idempotent."""
        if self._deadline is None:
            self._deadline = asyncio.get_running_loop().time() + self.config.graceful_timeout
        if self.grpc is not None:
            self.grpc.begin_shutdown()

    async def shutdown(self) -> None:
        """Wait for in-flight RPCs (HTTP is drained by uvicorn), then free threads and
        database connections."""
        self.begin_shutdown()
        if self.grpc is not None:
            await self.grpc.stop()
        loop = asyncio.get_running_loop()
        # One grace period for the whole shutdown, counted from the signal: HTTP and
        # gRPC have drained (or been cut off) by now, and a thread still busy with a
        # cancelled request's sync code must not get a grace period of its own.
        assert self._deadline is not None
        remaining = max(0.0, self._deadline - loop.time())
        await loop.run_in_executor(None, self.pool.shutdown, remaining)
        await sync_to_async(_close_main_thread_connections)()
        if self._uninstall_task_factory is not None:
            self._uninstall_task_factory()

    async def _lifespan(self, receive: ASGIReceiveCallable, send: ASGISendCallable) -> None:
        await receive()  # lifespan.startup
        try:
            await self.startup()
        except StartupError as exc:
            self.startup_failure = str(exc)
        except Exception as exc:
            logger.exception("gRPC server failed to start")
            self.startup_failure = f"{type(exc).__name__}: {exc}"
        if self.startup_failure is not None:
            await send({"type": "lifespan.startup.failed", "message": self.startup_failure})
            return
        await send({"type": "lifespan.startup.complete"})

        try:
            await receive()  # lifespan.shutdown
        except asyncio.CancelledError:
            return  # a forced exit: uvicorn skips the shutdown event
        try:
            await self.shutdown()
        except Exception as exc:
            logger.exception("Shutdown failed")
            await send(
                {"type": "lifespan.shutdown.failed", "message": f"{type(exc).__name__}: {exc}"}
            )
            return
        await send({"type": "lifespan.shutdown.complete"})

    async def _health(self, send: ASGISendCallable) -> None:
        serving = not self.shutting_down and self.grpc is not None
        body = json.dumps({"status": "SERVING" if serving else "NOT_SERVING"}).encode()
        await send(
            {
                "type": "http.response.start",
                "status": 200 if serving else 503,
                "headers": [
                    (b"content-type", b"application/json"),
                    (b"content-length", str(len(body)).encode()),
                    (b"cache-control", b"no-store"),
                ],
            }
        )
        await send({"type": "http.response.body", "body": body})


def _close_main_thread_connections() -> None:
    from django.db import connections

    connections.close_all()
    # With Django's connection pool (OPTIONS["pool"], PostgreSQL), closing a thread's
    # connection only gives it back to the pool: close the pools too, so that a server
    # stopped inside a process that goes on (LiveServer) leaves no connection behind.
    for connection in connections.all():
        close_pool = getattr(connection, "close_pool", None)  # backends with a pool
        if close_pool is not None:
            close_pool()  # does nothing without OPTIONS["pool"]
