"""The ASGI application hybridserver runs: Django's, wrapped.

This is the one place that knows the two servers start and stop together. Django's
``ASGIHandler`` does not speak the lifespan protocol; this wrapper does, and starts the
gRPC server inside the running loop at ``lifespan.startup`` and stops it at
``lifespan.shutdown``. It also answers the HTTP health path before Django's URLconf,
and gives every HTTP request the same pooled-thread context an RPC gets.
"""

from __future__ import annotations

import asyncio
import json
import logging
from typing import Any

from asgiref.sync import sync_to_async
from asgiref.typing import ASGIApplication, ASGIReceiveCallable, ASGISendCallable, Scope

from hybridserver.config import Config
from hybridserver.grpc.server import GrpcServer, StartupError
from hybridserver.threads import ThreadPool

logger = logging.getLogger("hybridserver.error")


class HybridApp:
    """Django's ASGI application plus a gRPC server that shares its loop and lifetime."""

    def __init__(self, app: ASGIApplication | Any, config: Config) -> None:
        self.app = app
        self.config = config
        self.pool = ThreadPool(config.threads)
        self.grpc: GrpcServer | None = None
        self.shutting_down = False

    async def __call__(
        self, scope: Scope, receive: ASGIReceiveCallable, send: ASGISendCallable
    ) -> None:
        if scope["type"] == "lifespan":
            await self._lifespan(receive, send)
        elif scope["type"] == "http" and scope["path"] == self.config.http_health_path:
            await self._health(send)
        else:
            async with self.pool.request_context():
                await self.app(scope, receive, send)

    async def startup(self) -> None:
        """Start the gRPC server. Raises StartupError with a one-line reason."""
        self.grpc = GrpcServer(self.config, self.pool)
        await self.grpc.start()

    def begin_shutdown(self) -> None:
        """First signal: stop taking new work on both protocols, now. Idempotent."""
        self.shutting_down = True
        if self.grpc is not None:
            self.grpc.begin_shutdown()

    async def shutdown(self) -> None:
        """Wait for in-flight RPCs (HTTP is drained by uvicorn), then free threads and
        database connections."""
        self.begin_shutdown()
        if self.grpc is not None:
            await self.grpc.stop()
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(None, self.pool.shutdown, self.config.graceful_timeout)
        await sync_to_async(_close_main_thread_connections)()

    async def _lifespan(self, receive: ASGIReceiveCallable, send: ASGISendCallable) -> None:
        await receive()  # lifespan.startup
        try:
            await self.startup()
        except StartupError as exc:
            await send({"type": "lifespan.startup.failed", "message": str(exc)})
            return
        except Exception as exc:
            logger.exception("gRPC server failed to start")
            await send(
                {"type": "lifespan.startup.failed", "message": f"{type(exc).__name__}: {exc}"}
            )
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
