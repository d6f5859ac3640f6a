"""Exceptions from handlers become status codes, as Django turns them into HTTP statuses;
an unexpected one reaches the server log, never the client."""

from __future__ import annotations

import logging
import uuid
from collections.abc import AsyncIterator

import grpc
import pytest

from project.catalog.grpc_gen.catalog.v1 import catalog_pb2, catalog_pb2_grpc
from tests.conftest import method

pytestmark = pytest.mark.timeout(60)

TIMEOUT = 10
SECRET = "secret-token-1234"

EXPECTED = {
    b"notfound": (grpc.StatusCode.NOT_FOUND, "Book matching query does not exist."),
    b"denied": (grpc.StatusCode.PERMISSION_DENIED, "no books for you"),
    b"invalid": (grpc.StatusCode.INVALID_ARGUMENT, "title: This field cannot be blank."),
    b"boom": (grpc.StatusCode.INTERNAL, "Internal server error"),
}


@pytest.fixture
def errors(caplog):
    """caplog, capturing what ``hybridserver.error`` logs at ERROR and above."""
    caplog.set_level(logging.ERROR, logger="hybridserver.error")
    return caplog


async def fail(channel, name: str, kind: bytes) -> grpc.aio.AioRpcError:
    """Call a Fail* method; return the error the client got."""
    if "Stream" in name:
        call = channel.unary_stream(method(name))(kind, timeout=TIMEOUT)
        received = []
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            async for message in call:
                received.append(message)
        # The stream's first message gets through; the error ends the stream.
        assert received == [b"first"]
    else:
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await channel.unary_unary(method(name))(kind, timeout=TIMEOUT)
    return caught.value


NAMES = ["Fail", "FailSync", "FailStream", "FailStreamSync"]


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("kind", [b"notfound", b"denied", b"invalid"])
async def test_django_exceptions_map_to_codes(channel, errors, name, kind):
    error = await fail(channel, name, kind)
    assert (error.code(), error.details()) == EXPECTED[kind]
    # Expected outcomes, not server errors: nothing in the error log.
    assert errors.records == []


@pytest.mark.parametrize("name", NAMES)
async def test_unexpected_exception_is_internal_and_logged(channel, errors, name):
    error = await fail(channel, name, b"boom")
    assert error.code() == grpc.StatusCode.INTERNAL
    assert error.details() == "Internal server error"
    assert SECRET not in error.details()
    for key, value in error.trailing_metadata() or ():
        assert SECRET not in key and SECRET not in str(value)
    assert SECRET not in error.debug_error_string()

    [record] = [r for r in errors.records if r.name == "hybridserver.error"]
    assert record.levelno == logging.ERROR
    assert method(name) in record.getMessage()
    assert record.exc_info is not None and isinstance(record.exc_info[1], RuntimeError)
    logged = errors.text
    assert f"RuntimeError: {SECRET} leaked?" in logged
    assert "Traceback (most recent call last)" in logged
    assert "in _raise" in logged  # the frame that raised


async def test_book_service_get_missing_book(channel, auth_metadata):
    stub = catalog_pb2_grpc.BookServiceStub(channel)
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await stub.GetBook(
            catalog_pb2.GetBookRequest(id=999_999_999), timeout=TIMEOUT, metadata=auth_metadata
        )
    assert caught.value.code() == grpc.StatusCode.NOT_FOUND
    assert caught.value.details() == "Book matching query does not exist."


async def test_book_service_create_invalid_writes_nothing(channel, errors, auth_metadata):
    stub = catalog_pb2_grpc.BookServiceStub(channel)
    author = f"author-{uuid.uuid4().hex}"

    async def new_books() -> AsyncIterator[catalog_pb2.CreateBookRequest]:
        yield catalog_pb2.CreateBookRequest(title="Valid", author=author)
        yield catalog_pb2.CreateBookRequest(title="   ", author=author, year=99_999)

    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await stub.CreateBooks(new_books(), timeout=TIMEOUT, metadata=auth_metadata)
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    details = caught.value.details()
    assert "books[1].title" in details and "books[1].year" in details
    assert "books[0]" not in details
    # All or nothing: the valid first book was not saved either.
    listed = stub.ListBooks(
        catalog_pb2.ListBooksRequest(author=author), timeout=TIMEOUT, metadata=auth_metadata
    )
    assert [book async for book in listed] == []
    assert errors.records == []


# Bytes that no protobuf parser accepts: field 1 with a length running past the end.
UNPARSABLE = b"\x0a\xff\xff\xff\x0f"


async def test_an_unparsable_request_message_is_invalid_argument(channel, errors):
    get_book = channel.unary_unary("/catalog.v1.BookService/GetBook")
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await get_book(UNPARSABLE, timeout=TIMEOUT)
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert caught.value.details() == "The request message could not be parsed."
    assert errors.records == []


async def test_an_unparsable_streamed_message_is_invalid_argument(channel, errors, auth_metadata):
    title = f"never-{uuid.uuid4().hex[:8]}"
    valid = catalog_pb2.CreateBookRequest(title=title, author="a").SerializeToString()
    create_books = channel.stream_unary("/catalog.v1.BookService/CreateBooks")
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await create_books(iter([valid, UNPARSABLE]), metadata=auth_metadata, timeout=TIMEOUT)
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert caught.value.details() == "The request message could not be parsed."
    assert errors.records == []
    # Nothing of the batch was written.
    books = catalog_pb2_grpc.BookServiceStub(channel)
    listing = books.ListBooks(catalog_pb2.ListBooksRequest(), metadata=auth_metadata)
    listed = [book async for book in listing]
    assert title not in {book.title for book in listed}
