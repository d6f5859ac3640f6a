"""Views for the HTTP auth tests: the decorators on sync and async views, and plain views
that say who the request is. Served by ``tests.urls_auth`` (with the example's URLs)."""

from __future__ import annotations

from typing import Any

from django.http import HttpRequest, JsonResponse
from django.urls import include, path

from hybridserver.auth import login_required, permission_required
from tests.servicers_auth import PERMS


def _answer(user: Any) -> JsonResponse:
    cls = user.__class__  # the real class, also through request.user's SimpleLazyObject
    kind = f"{cls.__module__}.{cls.__qualname__}"
    return JsonResponse({"user": user.get_username(), "type": kind})


async def whoami(request: HttpRequest) -> JsonResponse:
    return _answer(await request.auser())


def whoami_sync(request: HttpRequest) -> JsonResponse:
    return _answer(request.user)


@login_required
async def login_async(request: HttpRequest) -> JsonResponse:
    return _answer(await request.auser())


@login_required()
def login_sync(request: HttpRequest) -> JsonResponse:
    return _answer(request.user)


@permission_required(*PERMS)
async def perm_async(request: HttpRequest) -> JsonResponse:
    return _answer(await request.auser())


@permission_required(list(PERMS))
def perm_sync(request: HttpRequest) -> JsonResponse:
    return _answer(request.user)


@login_required
def form_post(request: HttpRequest) -> JsonResponse:
    """Not csrf_exempt: a POST with a session needs a CSRF token, one with a key does not."""
    return _answer(request.user)


urlpatterns = [
    path("auth/whoami", whoami),
    path("auth/whoami-sync", whoami_sync),
    path("auth/login", login_async),
    path("auth/login-sync", login_sync),
    path("auth/perm", perm_async),
    path("auth/perm-sync", perm_sync),
    path("auth/form", form_post),
    path("", include("project.urls")),
]
