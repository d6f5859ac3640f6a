"""The example project's URLs plus ``/slow/?s=N``, a request that stays in flight (and
``/slow-sync/?s=N``, the same from a sync view blocked in its thread, and
``/slow-query/?s=N``, from a sync view waiting on PostgreSQL's ``pg_sleep``), the
``/ratelimit/`` views of :mod:`tests.views_ratelimit`, and ``/backend/`` (async) and
``/backend-sync/``, views that query the database and name their connection, and
``/spin/?ms=N`` (async) and ``/spin-sync/?ms=N``, views that use N ms of CPU, and
``/until-cancelled/``, a view that waits until it is cancelled and says so in
:data:`WAITING`."""

from __future__ import annotations

import asyncio
import sys
import time

from asgiref.sync import sync_to_async
from django.db import connection
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.urls import include, path

from tests import servicers


async def slow(request: HttpRequest) -> HttpResponse:
    """Answer after ``s`` seconds. Prints a line when it starts, so a test can wait for it."""
    seconds = float(request.GET.get("s", "1"))
    sys.stdout.write(f"slow view started: {seconds}\n")  # one write: one whole line
    sys.stdout.flush()
    await asyncio.sleep(seconds)
    return HttpResponse(f"slept {seconds}")


#: Set by a test: ``started`` and ``cancelled`` events for ``/until-cancelled/``.
WAITING: dict[str, asyncio.Event] = {}


async def until_cancelled(request: HttpRequest) -> HttpResponse:
    """Wait until cancelled (a client that leaves), setting ``WAITING``'s events."""
    WAITING["started"].set()
    try:
        await asyncio.Event().wait()
    except asyncio.CancelledError:
        WAITING["cancelled"].set()
        raise
    raise AssertionError("unreachable")


def slow_sync(request: HttpRequest) -> HttpResponse:
    """Like :func:`slow`, blocked in its thread, as on a slow query."""
    seconds = float(request.GET.get("s", "1"))
    time.sleep(seconds)
    return HttpResponse(f"slept {seconds}")


def slow_query(request: HttpRequest) -> HttpResponse:
    """Like :func:`slow_sync`, waiting on a slow query (PostgreSQL only)."""
    seconds = float(request.GET.get("s", "1"))
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_sleep(%s)", [seconds])
    return HttpResponse(f"slept {seconds}")


async def backend(request: HttpRequest) -> JsonResponse:
    """An ORM query from an async view: ``servicers.backend()`` as JSON."""
    return JsonResponse(await sync_to_async(servicers.backend)())


def backend_sync(request: HttpRequest) -> JsonResponse:
    return JsonResponse(servicers.backend())


def use_cpu(seconds: float) -> None:
    """Keep the calling thread busy for ``seconds`` of its own CPU time."""
    end = time.thread_time() + seconds
    while time.thread_time() < end:
        pass


def _spin(request: HttpRequest) -> HttpResponse:
    milliseconds = float(request.GET.get("ms", "10"))
    use_cpu(milliseconds / 1000)
    return HttpResponse(f"spun {milliseconds}")


async def spin(request: HttpRequest) -> HttpResponse:
    """Use ``ms`` milliseconds of CPU on the event loop."""
    return _spin(request)


def spin_sync(request: HttpRequest) -> HttpResponse:
    """Use ``ms`` milliseconds of CPU on the request's thread."""
    return _spin(request)


urlpatterns = [
    path("spin/", spin),
    path("spin-sync/", spin_sync),
    path("slow/", slow),
    path("until-cancelled/", until_cancelled),
    path("slow-sync/", slow_sync),
    path("slow-query/", slow_query),
    path("backend/", backend),
    path("backend-sync/", backend_sync),
    path("ratelimit/", include("tests.views_ratelimit")),
    path("", include("project.urls")),
]
