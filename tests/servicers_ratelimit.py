"""``hybridtest.RateLimit``: ``@ratelimit`` on every handler shape and with every kind of key.

Every shape (``Unary`` ... ``BidiSync``) allows 2 calls per window with the default keys
(per user, else per peer) and group (the function's own). The ``Per...`` methods allow
1 call per window, told apart by the key their name says, and answer with the caller's
username. Windows are a day long: no test run crosses one in practice.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from typing import Any

import grpc
from google.protobuf.wrappers_pb2 import StringValue

from hybridserver.ratelimit import ratelimit

SERVICE = "hybridtest.RateLimit"
DAY = 24 * 60 * 60

# Every shape, async and sync: 2 calls per window, default keys and group.


@ratelimit(2, DAY)
async def unary(request: bytes, context: Any) -> bytes:
    return b"ok"


@ratelimit(2, DAY)
def unary_sync(request: bytes, context: Any) -> bytes:
    return b"ok"


@ratelimit(2, DAY)
async def server_stream(request: bytes, context: Any) -> AsyncIterator[bytes]:
    yield b"0"
    yield b"1"


@ratelimit(2, DAY)
async def server_stream_writes(request: bytes, context: Any) -> None:
    await context.write(b"0")
    await context.write(b"1")


@ratelimit(2, DAY)
def server_stream_sync(request: bytes, context: Any) -> Iterator[bytes]:
    yield b"0"
    yield b"1"


@ratelimit(2, DAY)
async def client_stream(requests: AsyncIterator[bytes], context: Any) -> bytes:
    return b",".join([message async for message in requests])


@ratelimit(2, DAY)
def client_stream_sync(requests: Iterator[bytes], context: Any) -> bytes:
    return b",".join(requests)


@ratelimit(2, DAY)
async def bidi(requests: AsyncIterator[bytes], context: Any) -> AsyncIterator[bytes]:
    async for message in requests:
        yield message


@ratelimit(2, DAY)
def bidi_sync(requests: Iterator[bytes], context: Any) -> Iterator[bytes]:
    yield from requests


# Keys: who the caller is, as the handler sees it.


async def whoami(request: Any, context: Any) -> bytes:
    return context.user.get_username().encode()


def whoami_sync(request: Any, context: Any) -> bytes:
    return context.user.get_username().encode()


def limited(function: Any, group: str, keys: list[Any] | None = None, max_calls: int = 1) -> Any:
    return ratelimit(max_calls, DAY, group=group, keys=keys)(function)


_unary = grpc.unary_unary_rpc_method_handler
_server_stream = grpc.unary_stream_rpc_method_handler
_client_stream = grpc.stream_unary_rpc_method_handler
_bidi = grpc.stream_stream_rpc_method_handler

SHAPES = {
    "Unary": ("unary", _unary(unary)),
    "UnarySync": ("unary", _unary(unary_sync)),
    "ServerStream": ("server_stream", _server_stream(server_stream)),
    "ServerStreamWrites": ("server_stream", _server_stream(server_stream_writes)),
    "ServerStreamSync": ("server_stream", _server_stream(server_stream_sync)),
    "ClientStream": ("client_stream", _client_stream(client_stream)),
    "ClientStreamSync": ("client_stream", _client_stream(client_stream_sync)),
    "Bidi": ("bidi", _bidi(bidi)),
    "BidiSync": ("bidi", _bidi(bidi_sync)),
}

HANDLERS = {
    **{name: handler for name, (_, handler) in SHAPES.items()},
    # The HTTP view tests.views_ratelimit.peer counts in the same group: one client IP,
    # one count, whichever protocol it uses.
    "PerPeer": _unary(limited(whoami, "peer-shared", ["peer"], max_calls=2)),
    "PerUser": _unary(limited(whoami, "PerUser", ["user"])),
    "PerUserSync": _unary(limited(whoami_sync, "PerUserSync", ["user"])),
    "PerApiKey": _unary(limited(whoami, "PerApiKey", ["api_key"])),
    "PerClient": _unary(limited(whoami_sync, "PerClient", ["metadata:x-client"])),
    "PerField": _unary(
        limited(whoami, "PerField", ["request:value"]),
        request_deserializer=StringValue.FromString,
    ),
    "PerCallable": _unary(
        limited(whoami, "PerCallable", [lambda request, context: request.partition(b":")[0]])
    ),
    "SharedA": _unary(limited(whoami, "shared", max_calls=2)),
    "SharedBSync": _unary(limited(whoami_sync, "shared", max_calls=2)),
    # tests.test_ratelimit's cross-process test: 5 calls per window across all servers.
    "Cross": _unary(limited(whoami, "cross-grpc", max_calls=5)),
    "CrossBurst": _unary(limited(whoami, "cross-burst", max_calls=5)),
    "CrossBurstSync": _unary(limited(whoami_sync, "cross-burst-sync", max_calls=5)),
}


def register(server: Any) -> None:
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(SERVICE, HANDLERS),))
