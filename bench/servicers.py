"""``bench.Bench``: the RPCs every server in the benchmark serves.

- ``Echo``: bytes in, the same bytes out (no serialization cost, so the server's own
  overhead shows);
- ``GetBookAsync`` / ``GetBookSync``: read one row with the async ORM or the sync ORM,
  ``catalog.v1.GetBookRequest`` in, ``catalog.v1.Book`` out;
- ``Hold``: a server stream that sends one message and then stays open until the client
  goes away, for memory per open stream;
- ``Ticks``: a server stream of as many 16-byte messages as the request says (``b"500"``),
  sent as fast as the client takes them.

``register(server)`` adds them to hybridserver, a bare ``grpc.aio`` server or any server
that takes ``add_generic_rpc_handlers``.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator
from typing import Any

import grpc

from project.catalog.grpc_gen.catalog.v1 import catalog_pb2
from project.catalog.models import Book

SERVICE = "bench.Bench"


def _book(book: Book) -> catalog_pb2.Book:
    return catalog_pb2.Book(id=book.pk, title=book.title, author=book.author, isbn=book.isbn)


async def echo(request: bytes, context: Any) -> bytes:
    return request


def echo_sync(request: bytes, context: Any) -> bytes:
    return request


async def get_book_async(request: catalog_pb2.GetBookRequest, context: Any) -> catalog_pb2.Book:
    return _book(await Book.objects.aget(pk=request.id))


def get_book_sync(request: catalog_pb2.GetBookRequest, context: Any) -> catalog_pb2.Book:
    return _book(Book.objects.get(pk=request.id))


async def hold(request: bytes, context: Any) -> AsyncIterator[bytes]:
    yield b"open"
    await asyncio.Event().wait()


async def ticks(request: bytes, context: Any) -> AsyncIterator[bytes]:
    for _ in range(int(request)):
        yield TICK


TICK = b"t" * 16


def _book_handler(behavior: Any) -> grpc.RpcMethodHandler:
    return grpc.unary_unary_rpc_method_handler(
        behavior,
        request_deserializer=catalog_pb2.GetBookRequest.FromString,
        response_serializer=catalog_pb2.Book.SerializeToString,
    )


HANDLERS = {
    "Echo": grpc.unary_unary_rpc_method_handler(echo),
    "EchoSync": grpc.unary_unary_rpc_method_handler(echo_sync),
    "GetBookAsync": _book_handler(get_book_async),
    "GetBookSync": _book_handler(get_book_sync),
    "Hold": grpc.unary_stream_rpc_method_handler(hold),
    "Ticks": grpc.unary_stream_rpc_method_handler(ticks),
}


def register(server: Any) -> None:
    """Add ``bench.Bench`` to ``server``."""
    if os.environ.get("BENCH_PROBE") == "1":
        from bench import probe

        probe.start()
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(SERVICE, HANDLERS),))
