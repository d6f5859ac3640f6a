from __future__ import annotations

from django.core.validators import MaxValueValidator, MinValueValidator
from django.db import models

from project.catalog.validation import max_year

DEFAULT_LIMIT = 100
MAX_LIMIT = 1000


def clamp_limit(limit: int | None) -> int:
    """Return how many books a listing may return.

    ``DEFAULT_LIMIT`` when ``limit`` is missing or below 1 (proto3 sends 0 for "unset"),
    and never more than ``MAX_LIMIT``.
    """
    if limit is None or limit < 1:
        return DEFAULT_LIMIT
    return min(limit, MAX_LIMIT)


class BookQuerySet(models.QuerySet):
    def search(self, *, author: str = "", limit: int | None = None) -> BookQuerySet:
        """Return books in id order, by ``author`` if given, bounded by ``clamp_limit``."""
        books = self.filter(author=author) if author else self.all()
        return books[: clamp_limit(limit)]


class Book(models.Model):
    """A book in the catalog.

    Call ``project.catalog.validation.validate_book`` before saving user input.
    """

    title = models.CharField(max_length=200)
    author = models.CharField(max_length=200)
    year = models.PositiveIntegerField(
        null=True,
        blank=True,
        validators=[MinValueValidator(0), MaxValueValidator(max_year)],
    )
    isbn = models.CharField("ISBN", max_length=20, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    objects = BookQuerySet.as_manager()

    class Meta:
        ordering = ("id",)

    def __str__(self) -> str:
        return f"{self.title} ({self.author})"
