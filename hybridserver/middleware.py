"""One thread hop for a run of Django's sync middleware hooks, not one per hook.

Under ASGI, a middleware built on Django's ``MiddlewareMixin`` runs each of its hooks,
``process_request`` on the way in and ``process_response`` on the way out, through its
own ``sync_to_async``: a hop from the event loop to the request's thread and back. The
default ``MIDDLEWARE`` (security, sessions, common, CSRF, auth, messages, clickjacking)
makes about a dozen such hops per request, even for an ``async def`` view, and each hop
costs two thread wake-ups and a pass through the loop. For a small view that is most of
the request's CPU time, and on a loop shared with gRPC every hop also waits its turn
behind the RPCs (BENCHMARKS.md has the numbers).

:func:`coalesce` walks the middleware chain Django built and replaces each run of such
middleware in a row, where that saves hops, with one layer that calls the run's
``process_request`` hooks in one hop, awaits the rest of the chain on the loop, and calls
their ``process_response`` hooks in one hop. The thread is not held while the view runs.
What each hook sees is what Django's chain gives it: the same order, the same request
thread, a hook that returns a response skips the rest of the way in and the
``process_response`` of the middleware inside it, and an exception raised in a hook
becomes a response right there (``response_for_exception``), which the middleware
outside it then processes as usual, as Django's ``convert_exception_to_response`` around
every middleware does. ``process_view``, ``process_exception`` and
``process_template_response`` stay where Django put them.

Only middleware that uses ``MiddlewareMixin``'s own ``__call__`` and ``__acall__`` with
plain (not ``async def``) hooks is merged; any other middleware, and any chain laid out
differently from Django's, is left as it is. ``COALESCE_MIDDLEWARE`` (on by default)
turns it off. The handler is changed in place, once: a second call finds nothing to do.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from asgiref.sync import iscoroutinefunction, markcoroutinefunction, sync_to_async
from django.core.handlers.base import BaseHandler
from django.core.handlers.exception import convert_exception_to_response, response_for_exception
from django.http import HttpRequest, HttpResponseBase
from django.utils.deprecation import MiddlewareMixin

Handler = Callable[[HttpRequest], Awaitable[HttpResponseBase]]


async def _sample(request: HttpRequest) -> None:  # pragma: no cover
    """Only wrapped, never called: see ``_LAYER_CODE``."""


# The code of the async wrapper Django puts around every middleware: a layer is only
# recognised if it is one of these.
_LAYER_CODE = convert_exception_to_response(_sample).__code__


def _hooks(members: list[MiddlewareMixin], name: str) -> int:
    return sum(hasattr(m, name) for m in members)


class MiddlewareRun:
    """One layer for middleware ``members`` (outermost first), then ``inner``."""

    def __init__(self, members: list[MiddlewareMixin], inner: Handler) -> None:
        self.members = members
        self.inner = inner
        self.requests = _hooks(members, "process_request") > 0
        self.responses = _hooks(members, "process_response") > 0
        self._enter = sync_to_async(self._process_requests, thread_sensitive=True)
        self._leave = sync_to_async(self._process_responses, thread_sensitive=True)
        markcoroutinefunction(self)

    def __repr__(self) -> str:
        names = ", ".join(type(m).__qualname__ for m in self.members)
        return f"<MiddlewareRun [{names}]>"

    async def __call__(self, request: HttpRequest) -> HttpResponseBase:
        try:
            last, response = len(self.members) - 1, None
            if self.requests:
                last, response = await self._enter(request)
            if response is None:
                response = await self.inner(request)
            if last >= 0 and self.responses:
                response = await self._leave(request, response, last)
        except Exception as exc:  # only if a hop itself failed
            response = await sync_to_async(response_for_exception, thread_sensitive=False)(
                request, exc
            )
        return response

    def _process_requests(self, request: HttpRequest) -> tuple[int, Any]:
        """The response that stopped the request on its way in (None if none did), and
        the innermost middleware that processes the response on the way out."""
        for depth, middleware in enumerate(self.members):
            if hasattr(middleware, "process_request"):
                try:
                    response = middleware.process_request(request)
                except Exception as exc:
                    # The middleware that raised does not process its own response.
                    return depth - 1, response_for_exception(request, exc)
                if response:
                    return depth, response
        return len(self.members) - 1, None

    def _process_responses(
        self, request: HttpRequest, response: HttpResponseBase, last: int
    ) -> HttpResponseBase:
        for middleware in reversed(self.members[: last + 1]):
            if hasattr(middleware, "process_response"):
                try:
                    response = middleware.process_response(request, response)
                except Exception as exc:
                    response = response_for_exception(request, exc)
        return response


def _mergeable(middleware: object) -> bool:
    cls = type(middleware)
    return (
        isinstance(middleware, MiddlewareMixin)
        and getattr(middleware, "async_mode", False)
        and cls.__call__ is MiddlewareMixin.__call__
        and cls.__acall__ is MiddlewareMixin.__acall__
        and not iscoroutinefunction(getattr(middleware, "process_request", None))
        and not iscoroutinefunction(getattr(middleware, "process_response", None))
    )


def _layers(chain: Any) -> list[Any]:
    """The middleware of Django's chain from the outside in, as far as the chain is laid
    out as Django lays it out."""
    layers = []
    while getattr(chain, "__code__", None) is _LAYER_CODE:
        middleware = getattr(chain, "__wrapped__", None)
        chain = getattr(middleware, "get_response", None)
        if chain is None:
            break
        layers.append(middleware)
    return layers


def find_django_handler(app: Any) -> BaseHandler | None:
    """Django's handler in ``app``, through ASGI middleware that keep the application
    they wrap as ``.app`` or ``.application`` (uvicorn's, Django's static files
    handler), or None."""
    for _ in range(16):
        if isinstance(app, BaseHandler) and getattr(app, "_middleware_chain", None):
            return app
        app = getattr(app, "app", None) or getattr(app, "application", None)
        if app is None:
            return None
    return None


def coalesce(handler: Any) -> int:
    """Merge the runs of ``handler``'s async middleware chain (a Django
    ``ASGIHandler`` or any ``BaseHandler`` loaded with ``is_async=True``); return how
    many thread hops per request that saves, at most."""
    layers = _layers(getattr(handler, "_middleware_chain", None))
    saved = 0
    # From the inside out, so that a run's inner handler is already final. Two runs
    # are always apart by a layer that is not merged, whose get_response points on.
    end = len(layers)
    while end > 0:
        start = end
        while start > 0 and _mergeable(layers[start - 1]):
            start -= 1
        run = layers[start:end]
        requests, responses = _hooks(run, "process_request"), _hooks(run, "process_response")
        hops, merged = requests + responses, bool(requests) + bool(responses)
        if merged < hops:  # else one hop each way already, or nothing to merge
            layer = MiddlewareRun(run, run[-1].get_response)
            if start == 0:
                handler._middleware_chain = layer
            else:
                layers[start - 1].get_response = layer
            saved += hops - merged
        end = start - 1 if start == end else start
    return saved
