"""``hybridtest.Echo``: every handler shape hybridserver must support, over raw bytes.

Each behaviour exists as ``async def`` (``Name``) and plain ``def`` (``NameSync``), so a
test can run the same assertion over both. Requests and responses are bytes; clients
call ``channel.unary_unary("/hybridtest.Echo/Unary")`` and friends.
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections.abc import AsyncIterator, Iterator
from typing import Any

import grpc
from asgiref.sync import sync_to_async
from django.core.exceptions import PermissionDenied, ValidationError
from django.db import connection

from project.catalog.models import Book

SERVICE = "hybridtest.Echo"

_barriers: dict[bytes, threading.Barrier] = {}
_barriers_lock = threading.Lock()


def _barrier(request: bytes) -> threading.Barrier:
    """A barrier shared by all RPCs that send the same ``name:parties`` request."""
    with _barriers_lock:
        if request not in _barriers:
            _barriers[request] = threading.Barrier(int(request.split(b":")[1]), timeout=10)
        return _barriers[request]


def _raise(kind: bytes) -> None:
    if kind == b"notfound":
        Book.objects.get(pk=-1)
    if kind == b"denied":
        raise PermissionDenied("no books for you")
    if kind == b"invalid":
        raise ValidationError({"title": ["This field cannot be blank."]})
    if kind == b"boom":
        raise RuntimeError("secret-token-1234 leaked?")
    raise AssertionError(f"unknown failure {kind!r}")


async def _araise(kind: bytes, context: Any) -> None:
    if kind == b"notfound":
        await Book.objects.aget(pk=-1)
    if kind == b"abort":
        await context.abort(grpc.StatusCode.FAILED_PRECONDITION, "custom details")
    _raise(kind)


def _db_info() -> dict[str, Any]:
    count = Book.objects.count()
    return {
        "count": count,
        "thread": threading.get_ident(),
        "connection": id(connection.connection),
    }


# async def handlers


async def unary(request: bytes, context: Any) -> bytes:
    return request


async def server_stream(request: bytes, context: Any) -> AsyncIterator[bytes]:
    for i in range(int(request or b"3")):
        yield str(i).encode()


async def server_stream_writes(request: bytes, context: Any) -> None:
    for i in range(int(request or b"3")):
        await context.write(str(i).encode())


async def client_stream(requests: AsyncIterator[bytes], context: Any) -> bytes:
    return b",".join([message async for message in requests])


async def bidi(requests: AsyncIterator[bytes], context: Any) -> AsyncIterator[bytes]:
    async for message in requests:
        yield message


async def sleep(request: bytes, context: Any) -> bytes:
    await asyncio.sleep(float(request))
    return b"slept"


async def sleep_stream(request: bytes, context: Any) -> AsyncIterator[bytes]:
    """Yields ``start`` at once, then ``end`` after sleeping ``request`` seconds."""
    yield b"start"
    await asyncio.sleep(float(request))
    yield b"end"


async def fail(request: bytes, context: Any) -> bytes:
    await _araise(request, context)
    return b"unreachable"


async def fail_stream(request: bytes, context: Any) -> AsyncIterator[bytes]:
    yield b"first"
    await _araise(request, context)


async def threads(request: bytes, context: Any) -> bytes:
    """Thread ids of two thread-sensitive calls in this RPC, after a shared barrier."""
    first = await sync_to_async(threading.get_ident)()
    if request:
        await sync_to_async(_barrier(request).wait)()
    second = await sync_to_async(threading.get_ident)()
    return json.dumps([first, second]).encode()


async def db(request: bytes, context: Any) -> bytes:
    count = await Book.objects.acount()
    info = await sync_to_async(_db_info)()
    return json.dumps({**info, "acount": count}).encode()


async def create(request: bytes, context: Any) -> bytes:
    book = await Book.objects.acreate(title=request.decode(), author="rpc")
    return str(book.pk).encode()


async def info(request: bytes, context: Any) -> bytes:
    await context.send_initial_metadata((("x-initial", "yes"),))
    context.set_trailing_metadata((("x-trailing", "yes"),))
    return json.dumps(
        {
            "metadata": [list(item) for item in context.invocation_metadata()],
            "time_remaining": context.time_remaining(),
            "peer": context.peer(),
            "method": context.method,
            "loop": type(asyncio.get_running_loop()).__module__,
        }
    ).encode()


# plain def handlers


def unary_sync(request: bytes, context: Any) -> bytes:
    return request


def server_stream_sync(request: bytes, context: Any) -> Iterator[bytes]:
    for i in range(int(request or b"3")):
        yield str(i).encode()


def client_stream_sync(requests: Iterator[bytes], context: Any) -> bytes:
    return b",".join(list(requests))


def bidi_sync(requests: Iterator[bytes], context: Any) -> Iterator[bytes]:
    yield from requests


def sleep_sync(request: bytes, context: Any) -> bytes:
    time.sleep(float(request))
    return b"slept"


def fail_sync(request: bytes, context: Any) -> bytes:
    if request == b"abort":
        context.abort(grpc.StatusCode.FAILED_PRECONDITION, "custom details")
    _raise(request)
    return b"unreachable"


def fail_stream_sync(request: bytes, context: Any) -> Iterator[bytes]:
    yield b"first"
    if request == b"abort":
        context.abort(grpc.StatusCode.FAILED_PRECONDITION, "custom details")
    _raise(request)


def threads_sync(request: bytes, context: Any) -> bytes:
    first = threading.get_ident()
    if request:
        _barrier(request).wait()
    return json.dumps([first, threading.get_ident()]).encode()


def db_sync(request: bytes, context: Any) -> bytes:
    return json.dumps(_db_info()).encode()


def create_sync(request: bytes, context: Any) -> bytes:
    return str(Book.objects.create(title=request.decode(), author="rpc").pk).encode()


def info_sync(request: bytes, context: Any) -> bytes:
    context.send_initial_metadata((("x-initial", "yes"),))
    context.set_trailing_metadata((("x-trailing", "yes"),))
    return json.dumps(
        {
            "metadata": [list(item) for item in context.invocation_metadata()],
            "time_remaining": context.time_remaining(),
            "active": context.is_active(),
            "method": context.method,
        }
    ).encode()


_unary = grpc.unary_unary_rpc_method_handler
_server_stream = grpc.unary_stream_rpc_method_handler
_client_stream = grpc.stream_unary_rpc_method_handler
_bidi = grpc.stream_stream_rpc_method_handler

HANDLERS = {
    "Unary": _unary(unary),
    "UnarySync": _unary(unary_sync),
    "ServerStream": _server_stream(server_stream),
    "ServerStreamWrites": _server_stream(server_stream_writes),
    "ServerStreamSync": _server_stream(server_stream_sync),
    "ClientStream": _client_stream(client_stream),
    "ClientStreamSync": _client_stream(client_stream_sync),
    "Bidi": _bidi(bidi),
    "BidiSync": _bidi(bidi_sync),
    "Sleep": _unary(sleep),
    "SleepSync": _unary(sleep_sync),
    "SleepStream": _server_stream(sleep_stream),
    "Fail": _unary(fail),
    "FailSync": _unary(fail_sync),
    "FailStream": _server_stream(fail_stream),
    "FailStreamSync": _server_stream(fail_stream_sync),
    "Threads": _unary(threads),
    "ThreadsSync": _unary(threads_sync),
    "Db": _unary(db),
    "DbSync": _unary(db_sync),
    "Create": _unary(create),
    "CreateSync": _unary(create_sync),
    "Info": _unary(info),
    "InfoSync": _unary(info_sync),
}


def register(server: Any) -> None:
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(SERVICE, HANDLERS),))
