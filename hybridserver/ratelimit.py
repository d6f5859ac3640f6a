"""``@ratelimit``: at most ``max_calls`` calls per ``time_period`` seconds, for Django views
and servicer methods alike. The name and signature are django-grpc's.

::

    from hybridserver.ratelimit import ratelimit

    @ratelimit(max_calls=100, time_period=60)                     # per user, else per IP
    async def book_list(request): ...

    class Books(catalog_pb2_grpc.BooksServicer):
        @ratelimit(10, 60, keys=["metadata:x-tenant", "request:isbn"])
        def GetBook(self, request, context): ...

Calls are counted in fixed windows aligned on the epoch (``time_period=60``: each
minute), in the Django cache named by ``HYBRIDSERVER["RATELIMIT_CACHE"]`` (``"default"``)
with ``add`` then ``incr``. Both are atomic in Redis and in the local-memory cache, so
with ``RedisCache`` a limit holds across every process and host that shares the cache;
with the default local-memory cache each process counts on its own. (Async code counts
with the same sync calls, on the request's thread: Django's ``aincr`` is not atomic.)
A cache error is not swallowed: the call fails (500 / ``INTERNAL``) rather than going
unlimited.

Over the limit a view answers ``429 Too Many Requests`` with a ``Retry-After`` header
(seconds until the window ends) and a JSON body ``{"error": ..., "retry_after": ...}``;
an RPC ends with ``RESOURCE_EXHAUSTED``, the same message as details and a
``retry-after`` trailing metadata entry.
"""

from __future__ import annotations

import hashlib
import inspect
import math
import time
import urllib.parse
from collections.abc import AsyncIterator, Callable, Iterator
from functools import reduce
from typing import Any, NoReturn, TypeVar

import grpc
from asgiref.sync import sync_to_async
from django.core.cache import caches
from django.http import JsonResponse

from hybridserver._decorators import Call, auser_of, guard, user_of
from hybridserver.auth.credentials import Credentials
from hybridserver.auth.keys import hash_key, key_prefix
from hybridserver.conf import hybrid_setting

__all__ = ["ratelimit"]

F = TypeVar("F", bound=Callable[..., Any])
Key = str | Callable[[Any, Any], Any]

#: Keys that name the caller rather than read a field.
CALLER_KEYS = ("user", "api_key", "peer")
_NEEDS_USER = frozenset({"user", "api_key"})


def ratelimit(
    max_calls: int,
    time_period: int,
    group: str | None = None,
    keys: list[Key] | None = None,
) -> Callable[[F], F]:
    """Allow ``max_calls`` calls per ``time_period`` seconds to a view or servicer method.

    :param max_calls: calls allowed in each window.
    :param time_period: the window, in whole seconds.
    :param group: calls counted together. Defaults to the decorated function's module
        and ``__qualname__``; give several functions the same group to share one limit.
    :param keys: what tells callers apart; each caller gets its own count. Any of:

        - ``"user"``: the authenticated user's pk (``request.user`` /
          ``context.user``); an anonymous caller counts as its ``"peer"``;
        - ``"api_key"``: the credential an authenticated caller presented: an API key's
          public prefix, or the SHA-256 of any other token (never the token itself); an
          anonymous caller counts as its ``"peer"``, so made-up keys buy nothing;
        - ``"peer"``: the client's IP address, ``request.META["REMOTE_ADDR"]`` or
          ``context.peer()`` without the port;
        - ``"request:field.path"``: an attribute of the request message (of the
          ``HttpRequest`` for a view), e.g. ``"request:isbn"``; not for client-streaming
          or bidirectional RPCs, whose request is a stream;
        - ``"metadata:name"``: an invocation metadata value (a request header for a view);
        - a callable ``key(request, context)`` returning a value; ``context`` is None for
          a view. In an ``async def`` function it may return an awaitable.

        Default: ``["user"]``, per user if authenticated, else per peer.
    """
    if isinstance(max_calls, bool) or not isinstance(max_calls, int) or max_calls < 1:
        raise ValueError(f"max_calls must be a positive integer, got {max_calls!r}")
    if isinstance(time_period, bool) or not isinstance(time_period, int) or time_period < 1:
        raise ValueError(f"time_period must be a positive number of seconds, got {time_period!r}")
    if isinstance(keys, str):
        raise TypeError(f"keys must be a list, got the string {keys!r}")
    keys = ["user"] if keys is None else list(keys)
    for key in keys:
        if callable(key) or key in CALLER_KEYS:
            continue
        if not isinstance(key, str) or not key.startswith(("request:", "metadata:")):
            raise ValueError(
                f"unknown ratelimit key {key!r}: expected one of {', '.join(CALLER_KEYS)}, "
                "'request:<field.path>', 'metadata:<name>' or a callable(request, context)"
            )
        if not key.partition(":")[2]:
            raise ValueError(f"ratelimit key {key!r} names no field")

    def decorator(function: F) -> F:
        name = group if group is not None else f"{function.__module__}.{function.__qualname__}"
        limit = _Limit(max_calls, time_period, name, tuple(keys))
        return guard(function, limit.check, limit.acheck)

    return decorator


def window(now: float, time_period: int) -> tuple[int, int]:
    """The start of the window holding ``now``, and whole seconds until it ends (>= 1)."""
    start = int(now // time_period) * time_period
    return start, max(1, math.ceil(start + time_period - now))


class _Limit:
    def __init__(self, max_calls: int, time_period: int, group: str, keys: tuple[Key, ...]):
        self.max_calls = max_calls
        self.time_period = time_period
        self.group = group
        self.keys = keys
        self.needs_user = any(key in _NEEDS_USER for key in keys if isinstance(key, str))

    def check(self, call: Call) -> JsonResponse | None:
        user = user_of(call) if self.needs_user else None
        values = [self._value(key, call, user) for key in self.keys]
        cache_key, timeout, retry_after = self._cache_key(values)
        if _count(cache_key, timeout) <= self.max_calls:
            return None
        if call.is_rpc:
            call.context.set_trailing_metadata((("retry-after", str(retry_after)),))
            call.context.abort(grpc.StatusCode.RESOURCE_EXHAUSTED, self._message(retry_after))
            _aborted()
        return self._response(retry_after)

    async def acheck(self, call: Call) -> JsonResponse | None:
        user = await auser_of(call) if self.needs_user else None
        values = [self._value(key, call, user) for key in self.keys]
        values = [await value if inspect.isawaitable(value) else value for value in values]
        cache_key, timeout, retry_after = self._cache_key(values)
        if await _acount(cache_key, timeout) <= self.max_calls:
            return None
        if call.is_rpc:
            call.context.set_trailing_metadata((("retry-after", str(retry_after)),))
            await call.context.abort(grpc.StatusCode.RESOURCE_EXHAUSTED, self._message(retry_after))
            _aborted()
        return self._response(retry_after)

    def _value(self, key: Key, call: Call, user: Any) -> Any:
        if callable(key):
            return key(call.request, call.context)
        if key == "user":
            if user is not None and user.is_authenticated:
                return f"user:{user.pk}"
            return f"peer:{peer_of(call)}"
        if key == "api_key":
            return _api_key(call, user)
        if key == "peer":
            return f"peer:{peer_of(call)}"
        kind, _, name = key.partition(":")
        if kind == "metadata":
            return _metadata(call, name)
        if isinstance(call.request, Iterator | AsyncIterator):
            raise TypeError(f"ratelimit key {key!r}: this RPC's requests are a stream")
        return reduce(lambda obj, field: getattr(obj, field, ""), name.split("."), call.request)

    def _cache_key(self, values: list[Any]) -> tuple[str, int, int]:
        """The cache key of this window, its timeout, and the seconds left in the window."""
        start, retry_after = window(time.time(), self.time_period)
        # Hashed: values may be long, contain spaces, or be credentials.
        parts = "\x1f".join([self.group, str(self.time_period), *map(str, values)])
        digest = hashlib.sha256(parts.encode()).hexdigest()
        # Kept one second past the window's end: no key vanishes while its window is on.
        return f"hybridserver.ratelimit:{digest}:{start}", retry_after + 1, retry_after

    def _message(self, retry_after: int) -> str:
        return (
            f"Reached limit of {self.max_calls} calls per {self.time_period} seconds. "
            f"Resource will be available in {retry_after} seconds."
        )

    def _response(self, retry_after: int) -> JsonResponse:
        response = JsonResponse(
            {"error": self._message(retry_after), "retry_after": retry_after}, status=429
        )
        response["Retry-After"] = str(retry_after)
        return response


def _cache() -> Any:
    return caches[hybrid_setting("RATELIMIT_CACHE")]


def _count(key: str, timeout: int) -> int:
    """This call's number in the window: 1 for the call that creates the counter."""
    cache = _cache()
    for _ in range(2):
        if cache.add(key, 1, timeout):
            return 1
        try:
            return cache.incr(key)
        except ValueError:  # evicted between add and incr: create it again
            continue
    return 1


# Not ``cache.aadd`` + ``cache.aincr``: Django's ``BaseCache.aincr``, which no built-in
# backend overrides, is a ``get`` then a ``set`` with the default timeout. Concurrent
# calls then read the same count (none is ever refused), and every call pushes the
# window's expiry back to 300 seconds. The sync ``incr`` is Redis's atomic INCRBY.
# ``aadd`` itself is ``sync_to_async(add)``: one thread hop for both costs no more.
_acount = sync_to_async(_count)


def _aborted() -> NoReturn:
    raise RuntimeError("context.abort() returned instead of raising")


def peer_of(call: Call) -> str:
    """The client's IP address (for a Unix socket peer, its gRPC name)."""
    if not call.is_rpc:
        return call.request.META.get("REMOTE_ADDR") or ""
    return grpc_peer_host(call.context.peer())


def grpc_peer_host(peer: str) -> str:
    """``ipv4:10.0.0.1:5000`` -> ``10.0.0.1``; ``ipv6:[::1]:5000`` (or ``%5B::1%5D``) -> ``::1``."""
    kind, _, address = peer.partition(":")
    if kind not in ("ipv4", "ipv6"):
        return peer
    host = urllib.parse.unquote(address).rpartition(":")[0]
    return host.strip("[]") or peer


def _metadata(call: Call, name: str) -> str:
    name = name.lower()
    if not call.is_rpc:
        return call.request.headers.get(name, "")
    for item_name, value in call.context.invocation_metadata() or ():
        if item_name == name:
            return value.hex() if isinstance(value, bytes) else value
    return ""


def _api_key(call: Call, user: Any) -> str:
    if user is None or not user.is_authenticated:
        return f"peer:{peer_of(call)}"
    if call.is_rpc:
        token = Credentials.from_metadata(call.context.invocation_metadata()).token
    else:
        token = Credentials.from_headers(call.request.headers).token
    if token is None:  # authenticated otherwise, e.g. by a session
        return f"user:{user.pk}"
    prefix = key_prefix(token)
    return f"api_key:{prefix}" if prefix else f"token:{hash_key(token)}"
