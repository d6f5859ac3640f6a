"""The rules a book must follow, shared by the JSON API, the gRPC service and the admin."""

from __future__ import annotations

from typing import TYPE_CHECKING

from django.utils import timezone

if TYPE_CHECKING:
    from project.catalog.models import Book

TEXT_FIELDS = ("title", "author", "isbn")


def max_year() -> int:
    """Return the latest acceptable publication year: next year, for announced books."""
    return timezone.now().year + 1


def validate_book(book: Book) -> None:
    """Strip surrounding whitespace from the text fields of ``book`` and validate it.

    Raises ``django.core.exceptions.ValidationError`` with messages keyed by field name.
    Does not touch the database, so it is safe to call from async code.
    """
    for name in TEXT_FIELDS:
        value = getattr(book, name)
        if isinstance(value, str):
            setattr(book, name, value.strip())
    book.full_clean()
