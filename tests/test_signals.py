"""``grpc_request_started``, ``grpc_request_finished`` and ``grpc_got_request_exception``:
sent once per RPC, for every kind, sync and async handlers, to sync and async receivers."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import logging
import threading
import uuid
from collections.abc import Iterator
from typing import Any

import grpc
import pytest
from django.dispatch import Signal

from hybridserver.grpc.context import ServicerContext, SyncServicerContext
from hybridserver.grpc.server import GrpcServer
from hybridserver.signals import (
    grpc_got_request_exception,
    grpc_request_finished,
    grpc_request_started,
    rpc_signals,
)
from project.catalog.models import Book
from tests.conftest import method

pytestmark = pytest.mark.timeout(60)

TIMEOUT = 10
SIGNALS = {
    "started": grpc_request_started,
    "finished": grpc_request_finished,
    "exception": grpc_got_request_exception,
}


@dataclasses.dataclass
class Event:
    signal: str
    sender: Any
    method: str
    request: Any
    context: Any
    exception: BaseException | None
    thread: int


class Recorder:
    """Receivers, sync or async, that record every signal they get."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self.events: list[Event] = []
        self.receivers: list[tuple[Signal, Any]] = []
        self.changed = asyncio.Event()
        self._loop = asyncio.get_running_loop()

    def _record(self, name: str, sender: Any, named: dict[str, Any]) -> None:
        self.events.append(
            Event(
                name,
                sender,
                named["method"],
                named["request"],
                named["context"],
                named.get("exception"),
                threading.get_ident(),
            )
        )
        self._loop.call_soon_threadsafe(self.changed.set)

    def connect(self) -> None:
        for name, signal in SIGNALS.items():
            if self.kind == "sync":

                def receiver(sender: Any, *, _name: str = name, **named: Any) -> None:
                    self._record(_name, sender, named)

            else:

                async def receiver(sender: Any, *, _name: str = name, **named: Any) -> None:
                    self._record(_name, sender, named)

            signal.connect(receiver, weak=False)
            self.receivers.append((signal, receiver))

    def disconnect(self) -> None:
        for signal, receiver in self.receivers:
            signal.disconnect(receiver)

    def of(self, name: str) -> list[Event]:
        """The events of the ``hybridtest.Echo`` method ``name``."""
        return [event for event in self.events if event.method == method(name)]

    async def wait_for(self, name: str, signal: str) -> None:
        while not any(event.signal == signal for event in self.of(name)):
            self.changed.clear()
            await asyncio.wait_for(self.changed.wait(), TIMEOUT)


@pytest.fixture(params=["sync", "async"])
async def recorder(request: pytest.FixtureRequest) -> Any:
    recorder = Recorder(request.param)
    recorder.connect()
    yield recorder
    recorder.disconnect()


@contextlib.contextmanager
def connected(signal: Signal, receiver: Any) -> Iterator[None]:
    signal.connect(receiver, weak=False)
    try:
        yield
    finally:
        signal.disconnect(receiver)


async def requests() -> Any:
    for message in (b"a", b"b"):
        yield message


async def call(channel: grpc.aio.Channel, name: str, request: bytes = b"2") -> Any:
    """Call an Echo method in the shape its name says; its answer(s)."""
    path = method(name)
    if name.startswith("Unary"):
        return await channel.unary_unary(path)(request, timeout=TIMEOUT)
    if name.startswith("ServerStream"):
        return [m async for m in channel.unary_stream(path)(request, timeout=TIMEOUT)]
    if name.startswith("ClientStream"):
        return await channel.stream_unary(path)(requests(), timeout=TIMEOUT)
    return [m async for m in channel.stream_stream(path)(requests(), timeout=TIMEOUT)]


EXPECTED = {
    "Unary": b"2",
    "ServerStream": [b"0", b"1"],
    "ClientStream": b"a,b",
    "Bidi": [b"a", b"b"],
}
SHAPES = [
    "Unary",
    "UnarySync",
    "ServerStream",
    "ServerStreamWrites",
    "ServerStreamSync",
    "ClientStream",
    "ClientStreamSync",
    "Bidi",
    "BidiSync",
]


@pytest.mark.parametrize("name", SHAPES)
async def test_sent_once_per_rpc(channel, recorder, name):
    kind = next(kind for kind in EXPECTED if name.startswith(kind))
    assert await call(channel, name) == EXPECTED[kind]

    events = recorder.of(name)
    assert [event.signal for event in events] == ["started", "finished"]
    started, finished = events
    for event in events:
        assert event.sender is GrpcServer
        assert event.method == method(name) == event.context.method
        assert event.exception is None
    # The context the handler sees: the sync one for plain def handlers.
    assert type(started.context) is (SyncServicerContext if "Sync" in name else ServicerContext)
    assert finished.context is started.context
    assert finished.request is started.request
    if kind in ("Unary", "ServerStream"):
        assert started.request == b"2"
    else:
        assert hasattr(started.request, "__next__" if "Sync" in name else "__anext__")


@pytest.mark.parametrize("name", ["Threads", "ThreadsSync"])
async def test_receivers_run_in_the_rpcs_context(channel, recorder, name):
    """Sync receivers run on the RPC's own thread, the one its sync code and ORM use."""
    handler_threads = json.loads(await channel.unary_unary(method(name))(b"", timeout=TIMEOUT))
    started, finished = recorder.of(name)
    if recorder.kind == "sync":
        assert started.thread == finished.thread == handler_threads[0] == handler_threads[1]
        assert started.thread != threading.get_ident()
    else:
        assert started.thread == finished.thread == threading.get_ident()


@pytest.mark.parametrize("name", ["Fail", "FailSync", "FailStream", "FailStreamSync"])
async def test_exception_sent_for_unexpected_errors(channel, recorder, name):
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await _fail(channel, name, b"boom")
    assert info.value.code() == grpc.StatusCode.INTERNAL
    assert info.value.details() == "Internal server error"

    events = recorder.of(name)
    assert [event.signal for event in events] == ["started", "exception", "finished"]
    exception = events[1].exception
    assert isinstance(exception, RuntimeError)
    assert str(exception) == "secret-token-1234 leaked?"
    assert events[1].context is events[0].context


@pytest.mark.parametrize("name", ["Fail", "FailSync", "FailStream", "FailStreamSync"])
@pytest.mark.parametrize(
    ("kind", "code"),
    [
        (b"notfound", grpc.StatusCode.NOT_FOUND),
        (b"denied", grpc.StatusCode.PERMISSION_DENIED),
        (b"invalid", grpc.StatusCode.INVALID_ARGUMENT),
        (b"abort", grpc.StatusCode.FAILED_PRECONDITION),
    ],
)
async def test_no_exception_signal_for_mapped_errors(channel, recorder, name, kind, code):
    """As Django sends got_request_exception for a 500, not for a 404 or a 403."""
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await _fail(channel, name, kind)
    assert info.value.code() == code
    # context.abort() sends the status at once, before the handler has unwound.
    await recorder.wait_for(name, "finished")
    assert [event.signal for event in recorder.of(name)] == ["started", "finished"]


async def _fail(channel: grpc.aio.Channel, name: str, kind: bytes) -> Any:
    if "Stream" in name:
        return [m async for m in channel.unary_stream(method(name))(kind, timeout=TIMEOUT)]
    return await channel.unary_unary(method(name))(kind, timeout=TIMEOUT)


@pytest.mark.parametrize("name", ["Sleep", "SleepStream"])
async def test_finished_sent_when_the_client_cancels(channel, name):
    started, finished = asyncio.Event(), asyncio.Event()

    async def on_started(sender: Any, **named: Any) -> None:
        if named["method"] == method(name):
            started.set()

    async def on_finished(sender: Any, **named: Any) -> None:
        if named["method"] == method(name):
            finished.set()

    with connected(grpc_request_started, on_started), connected(grpc_request_finished, on_finished):
        if name == "Sleep":
            rpc = channel.unary_unary(method(name))(b"30", timeout=TIMEOUT)
        else:
            rpc = channel.unary_stream(method(name))(b"30", timeout=TIMEOUT)
            assert await rpc.read() == b"start"
        await asyncio.wait_for(started.wait(), TIMEOUT)
        rpc.cancel()
        await asyncio.wait_for(finished.wait(), TIMEOUT)


# Receivers that fail


@pytest.mark.parametrize("kind", ["sync", "async"])
@pytest.mark.parametrize("name", ["CreateSync", "Create"])
async def test_failing_started_receiver_fails_the_rpc_without_leaking(channel, caplog, kind, name):
    def broken(sender: Any, **named: Any) -> None:
        raise RuntimeError("receiver secret")

    async def abroken(sender: Any, **named: Any) -> None:
        broken(sender)

    later = []

    def on_later(sender: Any, signal: Signal, **named: Any) -> None:
        later.append(signal)

    title = f"never-{uuid.uuid4().hex}"
    with (
        connected(grpc_request_started, broken if kind == "sync" else abroken),
        connected(grpc_request_finished, on_later),
        connected(grpc_got_request_exception, on_later),
    ):
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await channel.unary_unary(method(name))(title.encode(), timeout=TIMEOUT)
    assert info.value.code() == grpc.StatusCode.INTERNAL
    assert info.value.details() == "Internal server error"
    assert "receiver secret" in caplog.text  # in the server's log, not the client's answer
    assert not await Book.objects.filter(title=title).aexists()  # the handler never ran
    # As in Django: a request that never started does not finish either.
    assert later == []


@pytest.mark.parametrize("signal", ["finished", "exception"])
@pytest.mark.parametrize("kind", ["sync", "async"])
async def test_failing_late_receivers_do_not_change_the_answer(channel, caplog, signal, kind):
    calls = []

    def broken(sender: Any, **named: Any) -> None:
        calls.append(named["method"])
        raise RuntimeError("receiver secret")

    async def abroken(sender: Any, **named: Any) -> None:
        broken(sender, **named)

    caplog.set_level(logging.ERROR, logger="django.dispatch")
    with connected(SIGNALS[signal], broken if kind == "sync" else abroken):
        if signal == "finished":
            assert await channel.unary_unary(method("Unary"))(b"hi", timeout=TIMEOUT) == b"hi"
        else:
            with pytest.raises(grpc.aio.AioRpcError) as info:
                await channel.unary_unary(method("Fail"))(b"boom", timeout=TIMEOUT)
            assert info.value.code() == grpc.StatusCode.INTERNAL
            assert info.value.details() == "Internal server error"
    assert calls == [method("Unary" if signal == "finished" else "Fail")]
    assert any(
        record.name == "django.dispatch" and "receiver secret" in str(record.exc_info[1])
        for record in caplog.records
        if record.exc_info
    )


def test_nothing_sent_without_receivers():
    """The per-RPC cost of unobserved signals: one shared do-nothing object, no sending."""
    assert not (
        grpc_request_started.receivers
        or grpc_request_finished.receivers
        or grpc_got_request_exception.receivers
    )
    assert rpc_signals("/a.B/C", b"", None) is rpc_signals("/a.B/D", b"", None)
