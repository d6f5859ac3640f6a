"""Views for the rate-limit tests, under ``/ratelimit/`` in ``tests.urls``.

Each answers ``{"user": <username>}``; limits are per day (see
:mod:`tests.servicers_ratelimit`).
"""

from __future__ import annotations

from typing import Any

from django.http import HttpRequest, JsonResponse
from django.urls import path
from django.views import View

from hybridserver.ratelimit import ratelimit
from tests.servicers_ratelimit import DAY


def _answer(user: Any) -> JsonResponse:
    return JsonResponse({"user": user.get_username()})


@ratelimit(2, DAY)
async def default(request: HttpRequest) -> JsonResponse:
    return _answer(await request.auser())


@ratelimit(2, DAY)
def default_sync(request: HttpRequest) -> JsonResponse:
    return _answer(request.user)


class LimitedView(View):
    @ratelimit(2, DAY)
    def get(self, request: HttpRequest) -> JsonResponse:
        return _answer(request.user)


# Shares its group with the RPC hybridtest.RateLimit/PerPeer.
@ratelimit(2, DAY, group="peer-shared", keys=["peer"])
async def peer(request: HttpRequest) -> JsonResponse:
    return _answer(await request.auser())


@ratelimit(1, DAY, keys=["user"])
async def per_user(request: HttpRequest) -> JsonResponse:
    return _answer(await request.auser())


@ratelimit(1, DAY, keys=["user"])
def per_user_sync(request: HttpRequest) -> JsonResponse:
    return _answer(request.user)


@ratelimit(1, DAY, keys=["api_key"])
async def per_api_key(request: HttpRequest) -> JsonResponse:
    return _answer(await request.auser())


@ratelimit(1, DAY, keys=["metadata:x-client"])
def per_header_sync(request: HttpRequest) -> JsonResponse:
    return _answer(request.user)


# tests.test_ratelimit's cross-process test: 5 calls per window across all servers.
@ratelimit(5, DAY, group="cross-http")
async def cross(request: HttpRequest) -> JsonResponse:
    return _answer(await request.auser())


urlpatterns = [
    path("default/", default),
    path("default-sync/", default_sync),
    path("class/", LimitedView.as_view()),
    path("peer/", peer),
    path("user/", per_user),
    path("user-sync/", per_user_sync),
    path("api-key/", per_api_key),
    path("header-sync/", per_header_sync),
    path("cross/", cross),
]
