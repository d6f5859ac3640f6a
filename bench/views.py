"""The benchmark's HTTP views: a JSON answer without the database, and one row read
with the async ORM and with the sync ORM."""

from __future__ import annotations

import asyncio
import time

from django.http import HttpRequest, JsonResponse

from project.catalog.models import Book

BOOK_ID = 1


async def echo(request: HttpRequest) -> JsonResponse:
    return JsonResponse({"echo": request.GET.get("m", "hello")})


async def wait(request: HttpRequest) -> JsonResponse:
    """An I/O-bound view: it waits ``ms`` milliseconds (default 50) without the CPU."""
    ms = int(request.GET.get("ms", "50"))
    await asyncio.sleep(ms / 1000)
    return JsonResponse({"waited_ms": ms})


def wait_sync(request: HttpRequest) -> JsonResponse:
    """A sync view blocked on I/O, as on a slow query or a call to another service: its
    thread waits ``ms`` milliseconds (default 50) without the CPU or the GIL."""
    ms = int(request.GET.get("ms", "50"))
    time.sleep(ms / 1000)
    return JsonResponse({"waited_ms": ms})


async def book_async(request: HttpRequest) -> JsonResponse:
    book = await Book.objects.aget(pk=BOOK_ID)
    return JsonResponse({"id": book.pk, "title": book.title})


def book_sync(request: HttpRequest) -> JsonResponse:
    book = Book.objects.get(pk=BOOK_ID)
    return JsonResponse({"id": book.pk, "title": book.title})
