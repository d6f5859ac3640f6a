"""Middleware and views that record what Django's chain does with them, for
:mod:`tests.test_middleware`: the same requests through Django's own chain and through
hybridserver's coalesced one must leave the same record.

Every hook appends ``"<name>.<hook>"`` and the thread it ran on to ``EVENTS[id]``, where
``id`` is the request's ``X-Id`` header. ``X-Act`` asks middleware to misbehave:
``stop:B`` (B's ``process_request`` answers), ``raise:C`` (it raises ``ValueError``),
``deny:A`` (it raises ``PermissionDenied``), ``raise-response:F``, ``replace:F`` (its
``process_response`` answers with a new response), ``view-stop:B`` (B's
``process_view`` answers), ``handle:D`` (D's ``process_exception`` answers).
"""

from __future__ import annotations

import threading
from collections import defaultdict
from typing import Any

from asgiref.sync import iscoroutinefunction, markcoroutinefunction
from django.core.exceptions import PermissionDenied
from django.http import HttpRequest, HttpResponse
from django.template import engines
from django.template.response import TemplateResponse
from django.urls import path
from django.utils.deprecation import MiddlewareMixin

EVENTS: defaultdict[str, list[tuple[str, int]]] = defaultdict(list)

#: Outermost first, as letters: A-B and C-D-E-F are runs of MiddlewareMixin middleware,
#: N (a native async middleware) between them.
STACK = "ABNCDEF"
#: C-D alone has one hook each way: merging saves nothing, so it stays as it is.
STACK_SHORT = "ABNCD"
#: With S, sync only, before E-F: Django then runs C, D and S in a thread and what is
#: inside them through ``async_to_sync``, so nothing past N is merged.
STACK_SYNC = "ABNCDSEF"


def middleware(stack: str) -> list[str]:
    return [f"{__name__}.{name}" for name in stack]


def record(request: HttpRequest, event: str) -> None:
    EVENTS[request.headers.get("X-Id", "")].append((event, threading.get_ident()))


def acts(request: HttpRequest) -> set[str]:
    return {act.strip() for act in request.headers.get("X-Act", "").split(",") if act}


class Recorder(MiddlewareMixin):
    name = "?"

    def _request(self, request: HttpRequest) -> HttpResponse | None:
        record(request, f"{self.name}.request")
        todo = acts(request)
        if f"stop:{self.name}" in todo:
            return HttpResponse(f"stopped by {self.name}", status=418)
        if f"raise:{self.name}" in todo:
            raise ValueError(f"{self.name} failed")
        if f"deny:{self.name}" in todo:
            raise PermissionDenied
        return None

    def _response(self, request: HttpRequest, response: HttpResponse) -> HttpResponse:
        record(request, f"{self.name}.response")
        todo = acts(request)
        if f"raise-response:{self.name}" in todo:
            raise ValueError(f"{self.name} failed on the way out")
        if f"replace:{self.name}" in todo:
            response = HttpResponse(f"replaced by {self.name}", status=202)
        response["X-Trail"] = response.get("X-Trail", "") + self.name
        return response


class A(Recorder):
    name = "A"
    process_request = Recorder._request
    process_response = Recorder._response


class B(Recorder):
    name = "B"
    process_request = Recorder._request
    process_response = Recorder._response

    def process_view(self, request: HttpRequest, view: Any, args: Any, kwargs: Any) -> Any:
        record(request, "B.view")
        if "view-stop:B" in acts(request):
            return HttpResponse("stopped by B's process_view", status=409)
        return None


class N:
    """Async-capable without MiddlewareMixin: never merged."""

    sync_capable = False
    async_capable = True

    def __init__(self, get_response: Any) -> None:
        self.get_response = get_response
        assert iscoroutinefunction(get_response)
        markcoroutinefunction(self)

    async def __call__(self, request: HttpRequest) -> HttpResponse:
        record(request, "N.in")
        response = await self.get_response(request)
        record(request, "N.out")
        response["X-Trail"] = response.get("X-Trail", "") + "N"
        return response


class C(Recorder):
    name = "C"
    process_request = Recorder._request


class D(Recorder):
    name = "D"
    process_response = Recorder._response

    def process_exception(self, request: HttpRequest, exception: Exception) -> Any:
        record(request, "D.exception")
        if "handle:D" in acts(request):
            return HttpResponse(f"handled {exception}", status=299)
        return None


class S(Recorder):
    """Sync only: Django runs it, and what is inside it, in the request's thread."""

    name = "S"
    async_capable = False
    process_request = Recorder._request
    process_response = Recorder._response


class E(Recorder):
    name = "E"
    process_request = Recorder._request


class F(Recorder):
    name = "F"
    process_request = Recorder._request
    process_response = Recorder._response

    def process_template_response(self, request: HttpRequest, response: Any) -> Any:
        record(request, "F.template")
        response.context_data = {"who": "F"}
        return response


async def ok(request: HttpRequest) -> HttpResponse:
    record(request, "view")
    return HttpResponse("ok")


def ok_sync(request: HttpRequest) -> HttpResponse:
    record(request, "view")
    return HttpResponse("ok, sync")


async def fail(request: HttpRequest) -> HttpResponse:
    record(request, "view")
    raise ValueError("the view failed")


async def template(request: HttpRequest) -> TemplateResponse:
    record(request, "view")
    page = engines["django"].from_string("made by {{ who }}")
    return TemplateResponse(request, page, {"who": "the view"})


urlpatterns = [
    path("ok/", ok),
    path("ok-sync/", ok_sync),
    path("fail/", fail),
    path("template/", template),
]
