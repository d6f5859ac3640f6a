"""``socio_bench.BenchController``: Echo and GetBook (async ORM) as socio actions.

Their request messages have the same wire format as the other servers' (``bytes payload
= 1``; ``int64 id = 1``), so the same h2load body drives every server."""

from __future__ import annotations

from typing import Any

from django_socio_grpc.decorators import grpc_action
from django_socio_grpc.services import Service

from project.catalog.models import Book


def _pb2() -> Any:
    from bench.peers.socio_bench.grpc import socio_bench_pb2

    return socio_bench_pb2


class BenchService(Service):
    @grpc_action(
        request=[{"name": "payload", "type": "bytes"}],
        response=[{"name": "payload", "type": "bytes"}],
    )
    async def Echo(self, request: Any, context: Any) -> Any:
        return _pb2().BenchServiceEchoResponse(payload=request.payload)

    @grpc_action(
        request=[{"name": "id", "type": "int64"}],
        response=[
            {"name": "id", "type": "int64"},
            {"name": "title", "type": "string"},
            {"name": "author", "type": "string"},
            {"name": "isbn", "type": "string"},
        ],
    )
    async def GetBook(self, request: Any, context: Any) -> Any:
        book = await Book.objects.aget(pk=request.id)
        return _pb2().BenchServiceGetBookResponse(
            id=book.pk, title=book.title, author=book.author, isbn=book.isbn
        )
