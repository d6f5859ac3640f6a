"""The standard gRPC health service, with watchers that let a shutdown finish.

grpcio-health-checking's servicer keeps ``Watch`` streams open through a graceful
shutdown, so one watching load balancer holds the process for the whole grace period.
This one sends ``NOT_SERVING`` and then ends every ``Watch``.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

ServingStatus = health_pb2.HealthCheckResponse.ServingStatus
SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING
SERVICE_UNKNOWN = health_pb2.HealthCheckResponse.SERVICE_UNKNOWN

SERVICE_NAME = health_pb2.DESCRIPTOR.services_by_name["Health"].full_name


class HealthServicer(health_pb2_grpc.HealthServicer):
    """``grpc.health.v1.Health``: Check, List and Watch."""

    def __init__(self) -> None:
        self._status: dict[str, ServingStatus] = {}
        self._changed = asyncio.Condition()
        self._shutting_down = False

    @property
    def shutting_down(self) -> bool:
        return self._shutting_down

    async def set(self, service: str, status: ServingStatus) -> None:
        """Set one service's status; ignored once shutdown has begun."""
        if self._shutting_down:
            return
        async with self._changed:
            self._status[service] = status
            self._changed.notify_all()

    async def enter_graceful_shutdown(self) -> None:
        """Mark every service ``NOT_SERVING`` for good, and end every ``Watch``."""
        if self._shutting_down:
            return
        async with self._changed:
            self._shutting_down = True
            for service in self._status:
                self._status[service] = NOT_SERVING
            self._changed.notify_all()

    async def Check(
        self, request: health_pb2.HealthCheckRequest, context: grpc.aio.ServicerContext
    ) -> health_pb2.HealthCheckResponse:
        status = self._status.get(request.service)
        if status is None:
            await context.abort(grpc.StatusCode.NOT_FOUND, "unknown service")
        return health_pb2.HealthCheckResponse(status=status)

    async def List(
        self, request: health_pb2.HealthListRequest, context: grpc.aio.ServicerContext
    ) -> health_pb2.HealthListResponse:
        return health_pb2.HealthListResponse(
            statuses={
                name: health_pb2.HealthCheckResponse(status=status)
                for name, status in self._status.items()
            }
        )

    async def Watch(
        self, request: health_pb2.HealthCheckRequest, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[health_pb2.HealthCheckResponse]:
        last = None
        while True:
            # Wait without holding the lock while a slow client reads.
            async with self._changed:
                status = self._current(request.service)
                while status == last and not self._shutting_down:
                    await self._changed.wait()
                    status = self._current(request.service)
            if status != last:
                last = status
                yield health_pb2.HealthCheckResponse(status=status)
            if self._shutting_down:
                return

    def _current(self, service: str) -> ServingStatus:
        if self._shutting_down:
            return NOT_SERVING
        return self._status.get(service, SERVICE_UNKNOWN)
