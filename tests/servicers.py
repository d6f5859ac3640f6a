"""``hybridtest.Echo``: every handler shape hybridserver must support, over raw bytes.

Each behaviour exists as ``async def`` (``Name``) and plain ``def`` (``NameSync``), so a
test can run the same assertion over both. Requests and responses are bytes; clients
call ``channel.unary_unary("/hybridtest.Echo/Unary")`` and friends.
"""

from __future__ import annotations

import asyncio
import json
import os
import threading
import time
from collections.abc import AsyncIterator, Iterator
from typing import Any

import grpc
from asgiref.sync import sync_to_async
from django.core.exceptions import PermissionDenied, ValidationError
from django.db import DEFAULT_DB_ALIAS, connection, connections

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


_holds: dict[bytes, asyncio.Event] = {}


def _hold(name: bytes) -> asyncio.Event:
    return _holds.setdefault(name, asyncio.Event())


def release(name: bytes) -> None:
    """Let every ``Hold`` RPC that was sent ``name`` finish (call it in the server's loop)."""
    _hold(name).set()


class HygieneWatch:
    """What the pooled thread does to one RPC's database connection once the RPC is over.

    ``ConnSync`` creates it on the thread that ran its query. The next time that thread
    checks its connections (``close_if_unusable_or_obsolete``, normally right after the
    RPC), the watch records the outcome, optionally sabotages the connection so that the
    check *before* the next RPC has something to repair, and sets ``checked``.
    """

    def __init__(self, wrapper: Any, then: bytes) -> None:
        self.wrapper = wrapper
        self.raw = wrapper.connection
        self.thread = threading.get_ident()
        self.then = then
        self.checked = threading.Event()
        self.checked_on: int | None = None
        self.closed: bool | None = None
        check = wrapper.close_if_unusable_or_obsolete

        def watched() -> None:
            del wrapper.close_if_unusable_or_obsolete  # one-shot
            try:
                check()
                self.checked_on = threading.get_ident()
                self.closed = wrapper.connection is None
                if then == b"expire":
                    wrapper.close_at = time.monotonic() - 1
                elif then == b"break":
                    self._break()
            finally:
                self.checked.set()

        wrapper.close_if_unusable_or_obsolete = watched

    def _break(self) -> None:
        """Kill the connection under Django's feet, as a dropped socket would."""
        wrapper = self.wrapper
        wrapper.connection.close()
        wrapper.errors_occurred = True
        if wrapper.vendor == "sqlite":
            # SQLite's is_usable() is always True; probe as other backends do.
            def is_usable() -> bool:
                try:
                    wrapper.connection.execute("SELECT 1")
                except Exception:
                    return False
                return True

            wrapper.is_usable = is_usable


watches: dict[bytes, HygieneWatch] = {}


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


async def hold(request: bytes, context: Any) -> AsyncIterator[bytes]:
    """Yields ``held``, then ``released`` once the test calls ``release(request)``."""
    yield b"held"
    await _hold(request).wait()
    yield b"released"


async def conn(request: bytes, context: Any) -> bytes:
    return await sync_to_async(conn_sync)(request, context)


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


def sleep_stream_sync(request: bytes, context: Any) -> Iterator[bytes]:
    """Yields ``start`` at once, then blocks its thread for ``request`` seconds."""
    yield b"start"
    time.sleep(float(request))
    yield b"end"


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


def conn_sync(request: bytes, context: Any) -> bytes:
    """Runs a query, then watches the connection: request ``key`` or ``key:expire|break``.

    Returns the thread and connection it used; ``watches[key]`` tells what happened next.
    """
    key, _, then = request.partition(b":")
    wrapper = connections[DEFAULT_DB_ALIAS]
    count = Book.objects.count()
    watches[key] = HygieneWatch(wrapper, then)
    return json.dumps(
        {"count": count, "thread": threading.get_ident(), "connection": id(wrapper.connection)}
    ).encode()


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
    "SleepStreamSync": _server_stream(sleep_stream_sync),
    "Hold": _server_stream(hold),
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
    "Conn": _unary(conn),
    "ConnSync": _unary(conn_sync),
    "Info": _unary(info),
    "InfoSync": _unary(info_sync),
}


def register(server: Any) -> None:
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(SERVICE, HANDLERS),))


# Connection discipline, cancellation and deadlines (test_connections, test_limits).


def backend() -> dict[str, Any]:
    """Which thread and database session serve this call: a query, then its backend pid."""
    count = Book.objects.count()
    pid = None
    if connection.vendor == "postgresql":
        with connection.cursor() as cursor:
            cursor.execute("SELECT pg_backend_pid()")
            pid = cursor.fetchone()[0]
    return {"count": count, "pid": pid, "thread": threading.get_ident()}


class Ending:
    """How one ``Watch*`` or ``Linger*`` handler ended, recorded by the handler itself."""

    def __init__(self) -> None:
        self.done = threading.Event()
        self.how = ""
        self.thread: int | None = None
        self.time_remaining: float | None = None

    def record(self, how: str) -> None:
        self.how, self.thread = how, threading.get_ident()
        self.done.set()


endings: dict[bytes, Ending] = {}


def ending(key: bytes) -> Ending:
    return endings.setdefault(key, Ending())


async def backend_rpc(request: bytes, context: Any) -> bytes:
    return json.dumps(await sync_to_async(backend)()).encode()


def backend_sync(request: bytes, context: Any) -> bytes:
    return json.dumps(backend()).encode()


async def watch(request: bytes, context: Any) -> AsyncIterator[bytes]:
    """Yields ``backend()``, then a tick every 10 ms for up to 30 s, recording its end."""
    try:
        yield json.dumps(await sync_to_async(backend)()).encode()
        for _ in range(3000):
            await asyncio.sleep(0.01)
            yield b"tick"
    except BaseException as exc:
        ending(request).record(type(exc).__name__)
        raise
    ending(request).record("finished")


def watch_sync(request: bytes, context: Any) -> Iterator[bytes]:
    """``Watch`` as a plain generator: closing it raises GeneratorExit at its ``yield``."""
    try:
        yield json.dumps(backend()).encode()
        for _ in range(3000):
            time.sleep(0.01)
            yield b"tick"
    except BaseException as exc:
        ending(request).record(type(exc).__name__)
        raise
    ending(request).record("finished")


async def linger(request: bytes, context: Any) -> bytes:
    """Request ``key:seconds``: sleeps, recording ``time_remaining()`` and how it ended."""
    key, _, seconds = request.partition(b":")
    ending(key).time_remaining = context.time_remaining()
    try:
        await asyncio.sleep(float(seconds))
    except BaseException as exc:
        ending(key).record(type(exc).__name__)
        raise
    ending(key).record("finished")
    return b"lingered"


def linger_sync(request: bytes, context: Any) -> bytes:
    """``Linger`` for a thread, which cannot be cancelled: it polls ``is_active()``."""
    key, _, seconds = request.partition(b":")
    ending(key).time_remaining = context.time_remaining()
    deadline = time.monotonic() + float(seconds)
    while time.monotonic() < deadline:
        if not context.is_active():
            ending(key).record("inactive")
            return b"nobody is listening"
        time.sleep(0.01)
    ending(key).record("finished")
    return b"lingered"


HANDLERS.update(
    {
        "Backend": _unary(backend_rpc),
        "BackendSync": _unary(backend_sync),
        "Watch": _server_stream(watch),
        "WatchSync": _server_stream(watch_sync),
        "Linger": _unary(linger),
        "LingerSync": _unary(linger_sync),
    }
)


async def pid(request: bytes, context: Any) -> bytes:
    """The serving process's id: which worker answered."""
    return str(os.getpid()).encode()


HANDLERS["Pid"] = _unary(pid)
