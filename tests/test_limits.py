"""Limits and bad input: each is refused with the right answer, nothing crashes the server,
nothing reaches the client that should not (no traceback, no exception text), and nothing
is left holding a thread or a database connection."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import os
import re
import struct
import time
import uuid
from collections.abc import AsyncIterator, Iterable

import grpc
import pytest
from django.db import connection
from grpc_health.v1 import health_pb2, health_pb2_grpc

from hybridserver.testing import LiveServer
from tests import postgres, servicers
from tests.conftest import method

pytestmark = pytest.mark.timeout(60)

TIMEOUT = 10
LEAKS = (b"Traceback", b'File "', b"secret", b"Error:")


async def assert_serving(server: LiveServer) -> None:
    """The server still answers on both ports, and runs sync code on a pooled thread."""
    async with grpc.aio.insecure_channel(server.grpc_target) as channel:
        health = health_pb2_grpc.HealthStub(channel)
        response = await health.Check(health_pb2.HealthCheckRequest(), timeout=TIMEOUT)
        assert response.status == health_pb2.HealthCheckResponse.SERVING
        answer = await channel.unary_unary(method("DbSync"))(b"", timeout=TIMEOUT)
        assert "count" in json.loads(answer)
    status, _ = await http_exchange(server, b"GET /healthz HTTP/1.1\r\nHost: t\r\n\r\n")
    assert status == 200


def assert_no_leak(text: str | bytes | None) -> None:
    data = text.encode() if isinstance(text, str) else (text or b"")
    for word in LEAKS:
        assert word not in data, data


# Concurrency and size limits


async def test_concurrency_limit_is_resource_exhausted():
    name = uuid.uuid4().hex.encode()
    async with LiveServer(grpc_max_concurrent_rpcs=2) as server:
        async with grpc.aio.insecure_channel(server.grpc_target) as channel:
            held = [channel.unary_stream(method("Hold"))(name, timeout=TIMEOUT) for _ in range(2)]
            try:
                assert [await call.read() for call in held] == [b"held", b"held"]
                with pytest.raises(grpc.aio.AioRpcError) as refused:
                    await channel.unary_unary(method("Unary"))(b"one too many", timeout=TIMEOUT)
                assert refused.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
                assert_no_leak(refused.value.details())
            finally:
                servicers.release(name)
            assert [await call.read() for call in held] == [b"released", b"released"]
        await assert_serving(server)


@pytest.mark.parametrize("limit", [None, 1024], ids=["default-4MiB", "1KiB"])
async def test_message_over_the_size_limit_is_resource_exhausted(limit):
    options = (
        {} if limit is None else {"grpc_options": (("grpc.max_receive_message_length", limit),)}
    )
    size = limit or 4 * 1024 * 1024
    async with LiveServer(**options) as server:
        async with grpc.aio.insecure_channel(server.grpc_target) as channel:
            unary = channel.unary_unary(method("Unary"))
            assert len(await unary(b"x" * (size - 100), timeout=TIMEOUT)) == size - 100
            with pytest.raises(grpc.aio.AioRpcError) as refused:
                await unary(b"x" * (size + 1), timeout=TIMEOUT)
            assert refused.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
            assert_no_leak(refused.value.details())
        await assert_serving(server)


# Raw bytes on the gRPC port: HTTP/2 by hand (RFC 9113 frames, RFC 7541 literals)

PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
PING_DATA = b"are you?"
DATA, HEADERS, RST_STREAM, SETTINGS, PING, GOAWAY = 0x0, 0x1, 0x3, 0x4, 0x6, 0x7
END_STREAM, ACK, END_HEADERS = 0x1, 0x1, 0x4


def frame(kind: int, flags: int, stream: int, payload: bytes = b"") -> bytes:
    return struct.pack(">I", len(payload))[1:] + struct.pack(">BBI", kind, flags, stream) + payload


def header_block(headers: Iterable[tuple[str, str]]) -> bytes:
    """HPACK literals without indexing: no table, no Huffman (names and values < 127)."""
    block = b""
    for name, value in headers:
        block += b"\x00" + bytes([len(name)]) + name.encode() + bytes([len(value)]) + value.encode()
    return block


def grpc_request_headers(path: str) -> bytes:
    return header_block(
        [
            (":method", "POST"),
            (":scheme", "http"),
            (":path", path),
            (":authority", "localhost"),
            ("content-type", "application/grpc"),
            ("te", "trailers"),
            ("grpc-timeout", "1S"),
        ]
    )


async def read_frames(reader: asyncio.StreamReader) -> AsyncIterator[tuple[int, int, int, bytes]]:
    """Frames until the server closes the connection."""
    while True:
        try:
            head = await reader.readexactly(9)
        except (asyncio.IncompleteReadError, ConnectionError):
            return
        length = int.from_bytes(head[:3], "big")
        kind, flags, stream = struct.unpack(">BBI", head[3:])
        try:
            payload = await reader.readexactly(length)
        except (asyncio.IncompleteReadError, ConnectionError):
            return
        yield kind, flags, stream & 0x7FFFFFFF, payload


@dataclasses.dataclass
class Exchange:
    frames: list[tuple[int, int, int]]  # (kind, flags, stream) of each frame received
    payloads: bytes  # all of their payloads, to look for leaks
    hung_up: bool  # the server sent GOAWAY or closed the connection

    def on_stream(self, stream: int) -> list[tuple[int, int]]:
        return [(kind, flags) for kind, flags, number in self.frames if number == stream]

    def status(self) -> int | None:
        """The ``grpc-status`` sent. grpc writes a header's first use on a connection as
        an HPACK literal without Huffman coding, so on a fresh connection it reads as is."""
        match = re.search(rb"grpc-status(\x01\d|\x02\d\d)", self.payloads)
        return int(match[1][1:]) if match else None


async def raw_grpc(server: LiveServer, data: bytes, *, ping: bool = False) -> Exchange:
    """Send ``data`` on a new connection; collect what comes back until the server hangs
    up, or answers our PING (payload ``PING_DATA``) when ``ping``, or else ends stream 1."""
    host, _, port = server.grpc_target.rpartition(":")
    reader, writer = await asyncio.open_connection(host, int(port))
    exchange = Exchange([], b"", hung_up=False)
    try:
        writer.write(data)

        async def hangs_up() -> bool:
            async for kind, flags, stream, payload in read_frames(reader):
                exchange.frames.append((kind, flags, stream))
                exchange.payloads += payload
                if kind == SETTINGS and not flags & ACK:
                    writer.write(frame(SETTINGS, ACK, 0))
                if kind == GOAWAY:
                    return True
                if kind == PING and flags & ACK and payload == PING_DATA:
                    return False
                ended = kind == RST_STREAM or (kind == HEADERS and flags & END_STREAM)
                if stream == 1 and ended and not ping:
                    return False
            return True

        exchange.hung_up = await asyncio.wait_for(hangs_up(), TIMEOUT)
    finally:
        writer.close()
    return exchange


async def test_random_bytes_on_the_grpc_port(server):
    for _ in range(3):
        # Not a preface: the server hangs up, at once, saying nothing of use to anyone.
        exchange = await raw_grpc(server, os.urandom(64 * 1024))
        assert exchange.hung_up
        assert_no_leak(exchange.payloads)
    await assert_serving(server)


@pytest.mark.parametrize(
    "junk",
    [
        pytest.param(frame(DATA, 0, 0, b"data on stream zero"), id="data-on-stream-0"),
        pytest.param(frame(SETTINGS, 0, 0, b"\x00\x04\xff"), id="settings-bad-length"),
        pytest.param(frame(PING, 0, 0, b"short"), id="ping-bad-length"),
        pytest.param(frame(HEADERS, END_HEADERS, 1, b"\xff\xff\xff\xff\xff"), id="bad-hpack"),
        pytest.param(frame(DATA, END_STREAM, 7, b"\x00" * 10), id="data-on-idle-stream"),
        pytest.param(frame(0x42, 0xFF, 3, os.urandom(32)), id="unknown-frame-type"),
        pytest.param(b"\xff" * 9 + os.urandom(100), id="frame-too-large"),
    ],
)
async def test_junk_frames_after_a_valid_preface(server, junk):
    """Either the server hangs up on the connection (a connection error), or it goes on
    speaking HTTP/2 on it: it answers a PING sent after the junk."""
    data = PREFACE + frame(SETTINGS, 0, 0) + junk + frame(PING, 0, 0, PING_DATA)
    exchange = await raw_grpc(server, data, ping=True)
    assert exchange.hung_up or (PING, ACK) in exchange.on_stream(0), exchange.frames
    # No answer on a stream as if a request had been made.
    assert all(kind != DATA for kind, _ in exchange.on_stream(1))
    assert_no_leak(exchange.payloads)
    await assert_serving(server)


@pytest.mark.parametrize(
    ("message", "code", "answer"),
    [
        # A message cut short by the end of the stream: nothing to hand the handler, and
        # grpc waits for the rest until the deadline (without one, until the client goes).
        pytest.param(b"\x00" + struct.pack(">I", 100) + b"abc", 4, None, id="says-100-sends-3"),
        pytest.param(b"\x00\x00", 4, None, id="cut-in-the-prefix"),
        # Refused from the prefix alone: nothing is allocated for the 4 GiB announced.
        pytest.param(b"\x00" + struct.pack(">I", 0xFFFFFFFF) + b"abc", 8, None, id="says-4GiB"),
        pytest.param(b"\x01" + struct.pack(">I", 3) + b"abc", 13, None, id="compressed-no-codec"),
        # A unary method takes the first message, whole, and reads no further.
        pytest.param(b"\x00" + struct.pack(">I", 2) + b"abcdef", 0, b"ab", id="says-2-sends-6"),
    ],
)
async def test_grpc_message_with_a_lying_length_prefix(server, message, code, answer):
    """A well-formed HTTP/2 request for Unary, with a 1 s deadline, whose gRPC message
    framing is wrong: the stream ends with a status, never with a traceback."""
    headers = frame(HEADERS, END_HEADERS, 1, grpc_request_headers(method("Unary")))
    data = frame(DATA, END_STREAM, 1, message)
    exchange = await raw_grpc(server, PREFACE + frame(SETTINGS, 0, 0) + headers + data)
    on_stream = exchange.on_stream(1)
    assert on_stream and on_stream[-1][0] in (HEADERS, RST_STREAM), exchange.frames
    assert exchange.status() == code
    assert (DATA, 0) in on_stream if answer else (DATA, 0) not in on_stream
    if answer:
        assert b"\x00\x00\x00\x00\x02" + answer in exchange.payloads
    assert_no_leak(exchange.payloads)
    await assert_serving(server)


# Malformed HTTP on the HTTP port


async def http_exchange(server: LiveServer, request: bytes) -> tuple[int, bytes]:
    """Send raw bytes on a connection of their own; the status and the whole answer."""
    host, _, port = server.http_url.removeprefix("http://").rpartition(":")
    reader, writer = await asyncio.open_connection(host, int(port))
    try:
        writer.write(request)
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), TIMEOUT)
        length = next(
            (
                int(line.split(b":", 1)[1])
                for line in head.lower().split(b"\r\n")
                if line.startswith(b"content-length:")
            ),
            0,
        )
        body = await asyncio.wait_for(reader.readexactly(length), TIMEOUT)
    finally:
        writer.close()
    return int(head.split(b" ", 2)[1]), head + body


@pytest.mark.parametrize(
    "request_bytes",
    [
        pytest.param(b"GARBAGE\r\n\r\n", id="garbage-request-line"),
        pytest.param(b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03" + b"\x00" * 64, id="tls"),
        pytest.param(b"GET / HTTP/1.1\r\nHost: t\r\nno colon here\r\n\r\n", id="header-no-colon"),
        pytest.param(b"GET / HTTP/1.1\r\nHost: t\r\nBad Name: x\r\n\r\n", id="space-in-name"),
        pytest.param(b"GET / HTTP/1.1\r\nHost: t\r\nX: a\x00b\r\n\r\n", id="nul-in-value"),
        pytest.param(b"POST / HTTP/1.1\r\nHost: t\r\nContent-Length: abc\r\n\r\n", id="bad-length"),
        pytest.param(
            b"POST / HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
            id="bad-chunk",
        ),
    ],
)
async def test_malformed_http_request_is_400(server, request_bytes):
    status, answer = await http_exchange(server, request_bytes)
    assert status == 400, answer
    assert_no_leak(answer)
    await assert_serving(server)


# Clients that go away, and deadlines


def pid_gone(pid: int) -> None:
    """Wait until the session database has no backend ``pid`` (PostgreSQL only)."""
    watcher = postgres.Connections(os.environ["DATABASE_URL"])
    try:
        watcher.wait_for(lambda pids: pid not in pids, timeout=TIMEOUT)
    finally:
        watcher.close()


async def ended(key: bytes) -> servicers.Ending:
    ending = servicers.ending(key)
    assert await asyncio.to_thread(ending.done.wait, TIMEOUT), "the handler never ended"
    return ending


@pytest.mark.parametrize("how", ["cancel", "close-channel"])
@pytest.mark.parametrize("name", ["Watch", "WatchSync"])
async def test_client_gone_mid_stream(name, how):
    """The handler is cancelled (async: CancelledError; sync: its generator is closed on
    its own thread), and its thread and database connection are given back: with one
    thread, the next RPC's query runs at once."""
    key = uuid.uuid4().hex.encode()
    async with LiveServer(threads=1) as server:
        channel = grpc.aio.insecure_channel(server.grpc_target)
        call = channel.unary_stream(method(name))(key, timeout=30)
        first = json.loads(await call.read())
        assert await call.read() == b"tick"
        if how == "cancel":
            call.cancel()
        await channel.close()

        ending = await ended(key)
        assert ending.how in ("CancelledError", "GeneratorExit")
        if name == "WatchSync":
            assert ending.thread == first["thread"]
        if connection.vendor == "postgresql":
            pid_gone(first["pid"])
        started = time.monotonic()
        async with grpc.aio.insecure_channel(server.grpc_target) as again:
            answer = json.loads(await again.unary_unary(method("BackendSync"))(b"", timeout=5))
        assert answer["thread"] == first["thread"]
        assert time.monotonic() - started < 2
        await assert_serving(server)


@pytest.mark.parametrize("name", ["Info", "InfoSync"])
async def test_deadline_reaches_the_handler(channel, name):
    answer = json.loads(await channel.unary_unary(method(name))(b"", timeout=7))
    # grpc-timeout travels rounded up to its unit: a few milliseconds more, at most.
    assert 5 < answer["time_remaining"] <= 7.1


@pytest.mark.parametrize("name", ["Linger", "LingerSync"])
async def test_passed_deadline_stops_the_handler(name):
    """The client gets DEADLINE_EXCEEDED when its deadline passes; an async handler is
    cancelled then, a sync one sees ``is_active()`` turn false; either way its thread is
    free for the next RPC."""
    key = uuid.uuid4().hex
    async with LiveServer(threads=1) as server:
        async with grpc.aio.insecure_channel(server.grpc_target) as channel:
            started = time.monotonic()
            with pytest.raises(grpc.aio.AioRpcError) as expired:
                await channel.unary_unary(method(name))(f"{key}:20".encode(), timeout=0.5)
            assert expired.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
            assert time.monotonic() - started < 2
            ending = await ended(key.encode())
            assert ending.how == ("CancelledError" if name == "Linger" else "inactive")
            assert ending.time_remaining is not None and 0 < ending.time_remaining <= 0.6
            assert time.monotonic() - started < 3
            await channel.unary_unary(method("DbSync"))(b"", timeout=5)
        await assert_serving(server)
