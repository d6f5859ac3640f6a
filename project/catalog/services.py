"""The gRPC ``catalog.v1.BookService`` over the ``Book`` model.

Django exceptions are left to propagate: hybridserver answers ``Book.DoesNotExist``
with NOT_FOUND and ``ValidationError`` with INVALID_ARGUMENT. Every RPC needs an API key
in the metadata (``authorization: Bearer <key>`` or ``x-api-key``): reading needs
``catalog.view_book``, creating ``catalog.add_book``, as over REST.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import grpc
from asgiref.sync import sync_to_async
from django.core.exceptions import ValidationError
from django.db import transaction

from hybridserver.auth import permission_required
from project.catalog.grpc_gen.catalog.v1 import catalog_pb2, catalog_pb2_grpc
from project.catalog.models import Book
from project.catalog.validation import validate_book


def book_to_message(book: Book) -> catalog_pb2.Book:
    """Return ``book`` as a ``catalog.v1.Book`` message."""
    return catalog_pb2.Book(
        id=book.pk,
        title=book.title,
        author=book.author,
        year=book.year,
        isbn=book.isbn,
        created_at=book.created_at,
    )


def create_books(books: list[Book]) -> None:
    """Validate all ``books``, then save them in one transaction: all or none.

    Raises ``ValidationError`` naming each invalid field as ``books[<index>].<field>``.
    """
    errors: dict[str, list[str]] = {}
    for index, book in enumerate(books):
        try:
            validate_book(book)
        except ValidationError as exc:
            for field, messages in exc.message_dict.items():
                errors[f"books[{index}].{field}"] = messages
    if errors:
        raise ValidationError(errors)
    with transaction.atomic():
        for book in books:
            book.save()


class BookService(catalog_pb2_grpc.BookServiceServicer):
    """Books in the catalog, one RPC of each kind."""

    @permission_required("catalog.view_book")
    async def GetBook(
        self, request: catalog_pb2.GetBookRequest, context: grpc.aio.ServicerContext
    ) -> catalog_pb2.Book:
        return book_to_message(await Book.objects.aget(pk=request.id))

    @permission_required("catalog.view_book")
    async def ListBooks(
        self, request: catalog_pb2.ListBooksRequest, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[catalog_pb2.Book]:
        async for book in Book.objects.search(author=request.author, limit=request.limit):
            yield book_to_message(book)

    @permission_required("catalog.add_book")
    async def CreateBooks(
        self,
        request_iterator: AsyncIterator[catalog_pb2.CreateBookRequest],
        context: grpc.aio.ServicerContext,
    ) -> catalog_pb2.CreateBooksResponse:
        books = [
            Book(
                title=request.title,
                author=request.author,
                year=request.year if request.HasField("year") else None,
                isbn=request.isbn,
            )
            async for request in request_iterator
        ]
        # Django's transactions are synchronous: run the whole batch in one thread.
        await sync_to_async(create_books)(books)
        return catalog_pb2.CreateBooksResponse(
            books=[book_to_message(book) for book in books], created=len(books)
        )

    @permission_required("catalog.view_book")
    async def LookupBooks(
        self,
        request_iterator: AsyncIterator[catalog_pb2.GetBookRequest],
        context: grpc.aio.ServicerContext,
    ) -> AsyncIterator[catalog_pb2.LookupBooksResponse]:
        async for request in request_iterator:
            book = await Book.objects.filter(pk=request.id).afirst()
            yield catalog_pb2.LookupBooksResponse(
                id=request.id,
                found=book is not None,
                book=book_to_message(book) if book is not None else None,
            )


def register(server: grpc.aio.Server) -> None:
    """Add ``BookService`` to ``server``; named in ``HYBRIDSERVER["GRPC_SERVICERS"]``."""
    catalog_pb2_grpc.add_BookServiceServicer_to_server(BookService(), server)
