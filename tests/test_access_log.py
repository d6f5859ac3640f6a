"""One access-log line per RPC on ``uvicorn.access.grpc``, in uvicorn's family and format."""

from __future__ import annotations

import asyncio
import logging
import re
import uuid
from collections.abc import AsyncIterator, Iterator

import grpc
import pytest
from uvicorn.logging import AccessFormatter

from hybridserver.logging import ACCESS_LOGGER, GrpcAccessFormatter, log_config
from hybridserver.testing import LiveServer
from tests import servicers
from tests.conftest import method

pytestmark = pytest.mark.timeout(60)

TIMEOUT = 10
PEER = re.compile(r"^127\.0\.0\.1:\d+$")


class AccessLog(logging.Handler):
    """Collects what ``uvicorn.access.grpc`` emits; a test can wait for a method's line.

    Attached to that logger itself, so it sees exactly what the logger lets through,
    whatever the ``propagate`` flags of its ancestors (uvicorn turns off propagation of
    ``uvicorn.access`` for ``access_log=False``, which would hide lines from caplog).
    """

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        super().__init__()
        self.records: list[logging.LogRecord] = []
        self._loop = loop
        self._arrived = asyncio.Event()

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)
        self._loop.call_soon_threadsafe(self._arrived.set)

    def lines(self, full_method: str) -> list[tuple]:
        return [r.args for r in self.records if r.args[1] == full_method]

    async def wait_for(self, full_method: str) -> tuple:
        """The one line for ``full_method``, once it has been written."""
        async with asyncio.timeout(TIMEOUT):
            while not self.lines(full_method):
                self._arrived.clear()
                await self._arrived.wait()
        [line] = self.lines(full_method)
        return line


@pytest.fixture
def restore_loggers() -> Iterator[None]:
    """Servers configure the process's loggers (levels, ``disabled``, uvicorn's own
    ``propagate`` for ``access_log=False``): leave them as they were."""
    names = ["uvicorn.access", ACCESS_LOGGER]
    saved = {
        name: (logger.level, logger.disabled, logger.propagate, list(logger.handlers))
        for name in names
        if (logger := logging.getLogger(name))
    }
    yield
    for name, (level, disabled, propagate, handlers) in saved.items():
        logger = logging.getLogger(name)
        logger.setLevel(level)
        logger.disabled, logger.propagate, logger.handlers = disabled, propagate, handlers


@pytest.fixture
async def access_log(restore_loggers) -> AsyncIterator[AccessLog]:
    logger = logging.getLogger(ACCESS_LOGGER)
    log = AccessLog(asyncio.get_running_loop())
    logger.addHandler(log)
    yield log
    logger.removeHandler(log)


def check_line(line: tuple, full_method: str, code: grpc.StatusCode) -> None:
    peer, logged_method, logged_code, duration = line
    assert PEER.match(peer), peer
    assert logged_method == full_method
    assert logged_code is code
    assert isinstance(duration, float) and 0 <= duration < TIMEOUT


async def test_one_line_per_rpc(access_log, channel):
    unary = method("Unary")
    for _ in range(3):
        await channel.unary_unary(unary)(b"x", timeout=TIMEOUT)
    stream = channel.unary_stream(method("ServerStreamSync"))(b"2", timeout=TIMEOUT)
    assert [m async for m in stream] == [b"0", b"1"]
    check_line(
        await access_log.wait_for(method("ServerStreamSync")),
        method("ServerStreamSync"),
        grpc.StatusCode.OK,
    )
    lines = access_log.lines(unary)
    assert len(lines) == 3
    for line in lines:
        check_line(line, unary, grpc.StatusCode.OK)
    assert {r.levelno for r in access_log.records} == {logging.INFO}


@pytest.mark.parametrize(
    ("name", "request_", "code"),
    [
        ("Fail", b"notfound", grpc.StatusCode.NOT_FOUND),
        ("FailSync", b"boom", grpc.StatusCode.INTERNAL),
        ("FailStream", b"boom", grpc.StatusCode.INTERNAL),
        ("FailStreamSync", b"notfound", grpc.StatusCode.NOT_FOUND),
        ("Fail", b"abort", grpc.StatusCode.FAILED_PRECONDITION),
    ],
)
async def test_error_codes(access_log, channel, name, request_, code):
    if "Stream" in name:
        call = channel.unary_stream(method(name))(request_, timeout=TIMEOUT)
    else:
        call = channel.unary_unary(method(name))(request_, timeout=TIMEOUT)
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await call if not hasattr(call, "read") else [m async for m in call]
    assert caught.value.code() == code
    check_line(await access_log.wait_for(method(name)), method(name), code)


@pytest.mark.parametrize("name", ["Hold", "SleepStreamSync"])
async def test_client_cancel(access_log, channel, name):
    request_ = uuid.uuid4().hex.encode() if name == "Hold" else b"0.5"
    call = channel.unary_stream(method(name))(request_, timeout=TIMEOUT)
    assert await anext(aiter(call)) in (b"held", b"start")  # the handler is running
    call.cancel()
    try:
        line = await access_log.wait_for(method(name))
    finally:
        servicers.release(request_)
    check_line(line, method(name), grpc.StatusCode.CANCELLED)


async def test_deadline_exceeded(access_log, channel):
    """The line of an RPC cut off by its deadline still names the client."""
    name = uuid.uuid4().hex.encode()
    call = channel.unary_stream(method("Hold"))(name, timeout=0.5)
    responses = aiter(call)
    assert await anext(responses) == b"held"
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await anext(responses)
    assert caught.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
    line = await access_log.wait_for(method("Hold"))
    # The client's deadline passes a moment before the server's (grpc-timeout is sent
    # rounded up, and measured from arrival), so the server may see the client's cancel
    # first: both codes are honest accounts of what the server saw.
    assert line[2] in (grpc.StatusCode.DEADLINE_EXCEEDED, grpc.StatusCode.CANCELLED)
    check_line(line, method("Hold"), line[2])


async def test_access_log_off(access_log):
    async with LiveServer(access_log=False) as server:
        async with grpc.aio.insecure_channel(server.grpc_target) as channel:
            await channel.unary_unary(method("Unary"))(b"x", timeout=TIMEOUT)
            with pytest.raises(grpc.aio.AioRpcError):
                await channel.unary_unary(method("Fail"))(b"notfound", timeout=TIMEOUT)
    # The line of an RPC is written before its answer is sent: had there been one,
    # it would be here by now.
    assert access_log.records == []


async def test_level_inherited_from_uvicorn_access(access_log, channel):
    assert logging.getLogger(ACCESS_LOGGER).level == logging.NOTSET
    uvicorn_access = logging.getLogger("uvicorn.access")
    uvicorn_access.setLevel(logging.WARNING)
    await channel.unary_unary(method("Unary"))(b"quiet", timeout=TIMEOUT)
    assert access_log.records == []  # see test_access_log_off

    uvicorn_access.setLevel(logging.INFO)
    await channel.unary_unary(method("UnarySync"))(b"loud", timeout=TIMEOUT)
    check_line(
        await access_log.wait_for(method("UnarySync")), method("UnarySync"), grpc.StatusCode.OK
    )
    assert access_log.lines(method("Unary")) == []


def access_record(args: tuple, name: str = ACCESS_LOGGER) -> logging.LogRecord:
    return logging.LogRecord(name, logging.INFO, __file__, 1, '%s - "GRPC %s" %s %s', args, None)


def test_formatter_matches_uvicorn():
    fmt = log_config()["formatters"]["grpc_access"]["fmt"]
    grpc_line = GrpcAccessFormatter(fmt, use_colors=False).format(
        access_record(("127.0.0.1:1234", "/x.Y/Z", grpc.StatusCode.OK, 0.0012))
    )
    assert grpc_line == 'INFO:     127.0.0.1:1234 - "GRPC /x.Y/Z" OK 1.2 ms'

    uvicorn_fmt = log_config()["formatters"]["access"]["fmt"]
    http_record = logging.LogRecord(
        "uvicorn.access",
        logging.INFO,
        __file__,
        1,
        '%s - "%s %s HTTP/%s" %d',  # what uvicorn's HTTP protocols log
        ("127.0.0.1:1234", "GET", "/x", "1.1", 200),
        None,
    )
    http_line = AccessFormatter(uvicorn_fmt, use_colors=False).format(http_record)
    # The same shape as uvicorn's line for an HTTP request, up to the status.
    assert http_line.startswith('INFO:     127.0.0.1:1234 - "GET /x HTTP/1.1" 200')
    assert grpc_line.split(' - "')[0] == http_line.split(' - "')[0]


@pytest.mark.parametrize(
    ("code", "colour"),
    [
        (grpc.StatusCode.OK, "\x1b[32m"),  # green
        (grpc.StatusCode.NOT_FOUND, "\x1b[33m"),  # yellow: the client's problem
        (grpc.StatusCode.INTERNAL, "\x1b[91m"),  # bright red: the server's
    ],
)
def test_formatter_colours(code, colour):
    fmt = log_config()["formatters"]["grpc_access"]["fmt"]
    line = GrpcAccessFormatter(fmt, use_colors=True).format(
        access_record(("10.0.0.1:5", "/x.Y/Z", code, 0.5))
    )
    assert f"{colour}{code.name}\x1b[0m" in line
    assert "500.0 ms" in line
