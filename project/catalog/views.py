"""JSON API for books: plain async Django views.

Every endpoint needs an API key (``Authorization: Bearer <key>`` or ``X-API-Key``) or a
session: reading needs ``catalog.view_book``, creating ``catalog.add_book``, updating
``catalog.change_book`` and deleting ``catalog.delete_book``.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Awaitable, Callable
from typing import Any

from django.core.exceptions import (
    NON_FIELD_ERRORS,
    BadRequest,
    ObjectDoesNotExist,
    ValidationError,
)
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.views.decorators.csrf import csrf_exempt

from hybridserver.auth import permission_required
from project.catalog.models import Book
from project.catalog.validation import validate_book

AsyncView = Callable[..., Awaitable[HttpResponse]]

# The JSON values each writable field accepts, and how to say so.
FIELD_TYPES: dict[str, tuple[type | tuple[type, ...], str]] = {
    "title": (str, "a string"),
    "author": (str, "a string"),
    "year": ((int, type(None)), "an integer or null"),
    "isbn": (str, "a string"),
}


def book_to_dict(book: Book) -> dict[str, Any]:
    """Return the JSON representation of ``book``."""
    return {
        "id": book.pk,
        "title": book.title,
        "author": book.author,
        "year": book.year,
        "isbn": book.isbn,
        "created_at": book.created_at.isoformat(),
        "updated_at": book.updated_at.isoformat(),
    }


def error_response(message: str, status: int, **extra: Any) -> JsonResponse:
    """Return ``{"error": message, **extra}`` with the given status."""
    return JsonResponse({"error": message, **extra}, status=status)


def json_api(*methods: str) -> Callable[[AsyncView], AsyncView]:
    """Make an async view a JSON endpoint for ``methods``.

    Other methods get a JSON 405; ``BadRequest`` and ``ValidationError`` become a JSON
    400 and ``DoesNotExist`` a JSON 404, so that views can let them propagate.
    """

    def decorator(view: AsyncView) -> AsyncView:
        @csrf_exempt
        @functools.wraps(view)
        async def wrapper(request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
            if request.method not in methods:
                response = error_response(f"Method {request.method} not allowed.", 405)
                response["Allow"] = ", ".join(methods)
                return response
            try:
                return await view(request, *args, **kwargs)
            except BadRequest as exc:
                return error_response(str(exc), 400)
            except ValidationError as exc:
                if hasattr(exc, "error_dict"):
                    fields = exc.message_dict
                else:
                    fields = {NON_FIELD_ERRORS: exc.messages}
                return error_response("Invalid input.", 400, fields=fields)
            except ObjectDoesNotExist:
                return error_response("Not found.", 404)

        return wrapper

    return decorator


def read_fields(request: HttpRequest) -> dict[str, Any]:
    """Return the book fields in the JSON object body of ``request``, type-checked."""
    try:
        data = json.loads(request.body)
    except ValueError as exc:
        raise BadRequest(f"Request body is not valid JSON: {exc}") from None
    if not isinstance(data, dict):
        raise BadRequest("Request body must be a JSON object.")
    errors: dict[str, list[str]] = {}
    for name, value in data.items():
        if name not in FIELD_TYPES:
            errors[name] = ["Unknown field."]
            continue
        types, description = FIELD_TYPES[name]
        # bool is a subclass of int, but true is not a year.
        if not isinstance(value, types) or isinstance(value, bool):
            errors[name] = [f"Expected {description}."]
    if errors:
        raise ValidationError(errors)
    return data


def read_limit(request: HttpRequest) -> int | None:
    """Return the ``limit`` query parameter as an integer, if given."""
    value = request.GET.get("limit")
    if value is None:
        return None
    try:
        return int(value)
    except ValueError:
        raise ValidationError({"limit": ["Enter a whole number."]}) from None


@json_api("GET", "POST")
async def book_list(request: HttpRequest) -> HttpResponse:
    """List books (``?author=``, ``?limit=``) or create one."""
    if request.method == "POST":
        return await create_book(request)
    return await list_books(request)


@permission_required("catalog.view_book")
async def list_books(request: HttpRequest) -> HttpResponse:
    books = Book.objects.search(author=request.GET.get("author", ""), limit=read_limit(request))
    return JsonResponse({"results": [book_to_dict(book) async for book in books]})


@permission_required("catalog.add_book")
async def create_book(request: HttpRequest) -> HttpResponse:
    book = Book(**read_fields(request))
    validate_book(book)
    await book.asave()
    return JsonResponse(book_to_dict(book), status=201)


@json_api("GET", "PATCH", "DELETE")
async def book_detail(request: HttpRequest, pk: int) -> HttpResponse:
    """Show, partially update or delete one book."""
    if request.method == "PATCH":
        return await update_book(request, pk)
    if request.method == "DELETE":
        return await delete_book(request, pk)
    return await show_book(request, pk)


@permission_required("catalog.view_book")
async def show_book(request: HttpRequest, pk: int) -> HttpResponse:
    return JsonResponse(book_to_dict(await Book.objects.aget(pk=pk)))


@permission_required("catalog.change_book")
async def update_book(request: HttpRequest, pk: int) -> HttpResponse:
    book = await Book.objects.aget(pk=pk)
    for name, value in read_fields(request).items():
        setattr(book, name, value)
    validate_book(book)
    await book.asave()
    return JsonResponse(book_to_dict(book))


@permission_required("catalog.delete_book")
async def delete_book(request: HttpRequest, pk: int) -> HttpResponse:
    await (await Book.objects.aget(pk=pk)).adelete()
    return HttpResponse(status=204)
