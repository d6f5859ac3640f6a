"""The example project's URLs plus ``/slow/?s=N``, a request that stays in flight, the
``/ratelimit/`` views of :mod:`tests.views_ratelimit`, and ``/backend/`` (async) and
``/backend-sync/``, views that query the database and name their connection."""

from __future__ import annotations

import asyncio
import sys

from asgiref.sync import sync_to_async
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


async def backend(request: HttpRequest) -> JsonResponse:
    """An ORM query from an async view: ``servicers.backend()`` as JSON."""
    return JsonResponse(await sync_to_async(servicers.backend)())


def backend_sync(request: HttpRequest) -> JsonResponse:
    return JsonResponse(servicers.backend())


urlpatterns = [
    path("slow/", slow),
    path("backend/", backend),
    path("backend-sync/", backend_sync),
    path("ratelimit/", include("tests.views_ratelimit")),
    path("", include("project.urls")),
]
