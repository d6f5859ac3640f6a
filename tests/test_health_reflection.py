"""Server reflection, the gRPC health service, and the HTTP health endpoint."""

from __future__ import annotations

import asyncio

import grpc
import httpx
import pytest
from django.urls import Resolver404, resolve
from google.protobuf.descriptor_pb2 import FileDescriptorProto
from google.protobuf.descriptor_pool import DescriptorPool
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc
from grpc_reflection.v1alpha.proto_reflection_descriptor_database import (
    ProtoReflectionDescriptorDatabase,
)

from project.catalog.grpc_gen.catalog.v1 import catalog_pb2

pytestmark = pytest.mark.timeout(60)

TIMEOUT = 10
SERVICES = {
    "catalog.v1.BookService",
    "hybridtest.Echo",
    "grpc.health.v1.Health",
    "grpc.reflection.v1alpha.ServerReflection",
}
# The file BookService was generated from, named as scripts/compile-protos names it.
CATALOG_FILE = catalog_pb2.DESCRIPTOR.name
SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING


def reflect(target: str) -> tuple[set[str], str, list[str]]:
    """What grpcio-reflection's own client learns: services, BookService's file, methods."""
    with grpc.insecure_channel(target) as channel:
        database = ProtoReflectionDescriptorDatabase(channel)
        services = set(database.get_services())
        file = database.FindFileContainingSymbol("catalog.v1.BookService")
        service = DescriptorPool(database).FindServiceByName("catalog.v1.BookService")
        return services, file.name, [m.name for m in service.methods]


async def test_reflection_client(server):
    # grpcio-reflection's client is synchronous: run it off the loop the server runs on.
    services, file_name, methods = await asyncio.to_thread(reflect, server.grpc_target)
    assert SERVICES <= services
    assert file_name == CATALOG_FILE
    assert file_name.endswith("catalog/v1/catalog.proto")
    assert methods == ["GetBook", "ListBooks", "CreateBooks", "LookupBooks"]


async def test_reflection_raw_stub(channel):
    stub = reflection_pb2_grpc.ServerReflectionStub(channel)
    call = stub.ServerReflectionInfo(timeout=TIMEOUT)
    await call.write(reflection_pb2.ServerReflectionRequest(list_services=""))
    listed = await call.read()
    assert SERVICES <= {s.name for s in listed.list_services_response.service}

    await call.write(
        reflection_pb2.ServerReflectionRequest(file_containing_symbol="catalog.v1.BookService")
    )
    found = await call.read()
    files = [
        FileDescriptorProto.FromString(raw)
        for raw in found.file_descriptor_response.file_descriptor_proto
    ]
    [catalog] = [f for f in files if f.name == CATALOG_FILE]
    assert catalog.package == "catalog.v1"
    assert [s.name for s in catalog.service] == ["BookService"]
    await call.done_writing()
    assert await call.read() is grpc.aio.EOF


async def test_health_check_every_service(server, channel):
    stub = health_pb2_grpc.HealthStub(channel)
    registered = set(server.app.grpc.service_names)
    assert SERVICES <= registered
    for service in ["", *registered]:
        request = health_pb2.HealthCheckRequest(service=service)
        response = await stub.Check(request, timeout=TIMEOUT)
        assert response.status == SERVING, service
    listed = await stub.List(health_pb2.HealthListRequest(), timeout=TIMEOUT)
    assert set(listed.statuses) == {"", *registered}
    assert {status.status for status in listed.statuses.values()} == {SERVING}
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await stub.Check(health_pb2.HealthCheckRequest(service="no.Such"), timeout=TIMEOUT)
    assert caught.value.code() == grpc.StatusCode.NOT_FOUND


async def test_watch_ends_when_shutdown_begins(server, channel):
    stub = health_pb2_grpc.HealthStub(channel)
    watches = [
        stub.Watch(health_pb2.HealthCheckRequest(service=service), timeout=TIMEOUT)
        for service in ("", "catalog.v1.BookService")
    ]
    streams = [aiter(watch) for watch in watches]
    for stream in streams:
        assert (await anext(stream)).status == SERVING

    server.app.begin_shutdown()
    for watch, stream in zip(watches, streams, strict=True):
        # One last message, then the end of the stream. (Iterating, not read(): once the
        # status is in, read() answers EOF even while a message is still unread.)
        assert [message.status async for message in stream] == [NOT_SERVING]
        # Ended by the server, cleanly: not cut off when the grace period ran out.
        assert await watch.code() == grpc.StatusCode.OK
    # With nothing else in flight the gRPC server is now free to stop.
    await asyncio.wait_for(server.app.grpc.stop(), TIMEOUT)


async def test_http_health_bypasses_django(http):
    with pytest.raises(Resolver404):
        resolve("/healthz")  # Django's URLconf has no such route...
    response = await http.get("/healthz")  # ...but the server answers it
    assert response.status_code == 200
    assert response.json() == {"status": "SERVING"}
    assert response.headers["cache-control"] == "no-store"

    missing = await http.get("/nonexistent")  # what Django says about a missing path
    assert missing.status_code == 404
    assert "Not Found" in missing.text


async def test_http_health_503_once_shutdown_begins(server):
    async with httpx.AsyncClient(
        base_url=server.http_url, timeout=TIMEOUT, limits=httpx.Limits(max_connections=1)
    ) as http:
        first = await http.get("/healthz")
        assert first.status_code == 200
        port = first.extensions["network_stream"].get_extra_info("client_addr")
        server.app.begin_shutdown()
        second = await http.get("/healthz")
        assert second.status_code == 503
        assert second.json() == {"status": "NOT_SERVING"}
        # The same keep-alive connection answered both.
        assert second.extensions["network_stream"].get_extra_info("client_addr") == port


async def test_asgi_health_directly(server):
    """The wrapper answers the health path itself, as plain ASGI."""
    sent: list[dict] = []

    async def receive() -> dict:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: dict) -> None:
        sent.append(message)

    scope = {"type": "http", "method": "GET", "path": "/healthz", "headers": []}
    await server.app(scope, receive, send)
    assert sent[0]["status"] == 200
    server.app.begin_shutdown()
    sent.clear()
    await server.app(scope, receive, send)
    assert sent[0]["status"] == 503
    assert sent[1]["body"] == b'{"status": "NOT_SERVING"}'
