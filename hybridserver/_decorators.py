"""What decorators for Django views and servicer methods alike have in common.

- :func:`find_call`: is this call a view (an ``HttpRequest`` among the first arguments)
  or an RPC (a gRPC context as the last argument)? Functions and methods (``self``
  first) both work.
- :func:`user_of` / :func:`auser_of`: who is calling, ``request.user`` or
  ``context.user``.
- :func:`guard`: run a check before the function, keeping the function's shape
  (``async def``, async generator, generator, plain ``def``), which is what Django reads
  to tell async views from sync ones and hybridserver reads to run each kind of servicer
  method.

Internal: used by :mod:`hybridserver.ratelimit`, and meant for any other decorator that
must work on both.
"""

from __future__ import annotations

import dataclasses
import functools
import inspect
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from asgiref.sync import iscoroutinefunction
from django.http import HttpRequest, HttpResponseBase

from hybridserver.grpc.context import ServicerContext

F = TypeVar("F", bound=Callable[..., Any])


@dataclasses.dataclass(frozen=True, slots=True)
class Call:
    """One call of a decorated view or servicer method."""

    #: The ``HttpRequest`` of a view; the request message of an RPC, or the request
    #: iterator of a client-streaming or bidirectional RPC.
    request: Any
    #: The RPC's context; None for a view.
    context: Any = None

    @property
    def is_rpc(self) -> bool:
        return self.context is not None


def is_grpc_context(value: Any) -> bool:
    """hybridserver's ``ServicerContext``, or anything that looks like a gRPC one."""
    return isinstance(value, ServicerContext) or (
        callable(getattr(value, "invocation_metadata", None))
        and callable(getattr(value, "peer", None))
        and callable(getattr(value, "abort", None))
    )


def find_call(args: tuple[Any, ...], kwargs: dict[str, Any]) -> Call:
    """The :class:`Call` that ``function(*args, **kwargs)`` is; ``TypeError`` if neither."""
    if "context" in kwargs or len(args) >= 2:
        context = kwargs["context"] if "context" in kwargs else args[-1]
        if is_grpc_context(context):
            request = kwargs["request"] if "request" in kwargs else args[-2]
            return Call(request, context)
    for arg in (*args[:2], kwargs.get("request")):
        if isinstance(arg, HttpRequest):
            return Call(arg)
    raise TypeError(
        "this decorator applies to Django views (an HttpRequest argument) and to servicer "
        "methods (request, context); found neither"
    )


def user_of(call: Call) -> Any:
    """``request.user`` or ``context.user``, or None where there is none."""
    return getattr(call.context if call.is_rpc else call.request, "user", None)


async def auser_of(call: Call) -> Any:
    """:func:`user_of`, without a blocking query in an async view (``request.auser()``)."""
    if not call.is_rpc and (auser := getattr(call.request, "auser", None)) is not None:
        return await auser()
    return user_of(call)


Check = Callable[[Call], HttpResponseBase | None]
AsyncCheck = Callable[[Call], Awaitable[HttpResponseBase | None]]


def guard(function: F, check: Check, acheck: AsyncCheck) -> F:
    """``function``, calling ``check(call)`` first (``await acheck(call)`` if it is async).

    A check refuses an RPC by aborting (which raises) and a view by returning a
    response, which is then returned instead of calling the view.
    """
    wrapper: Callable[..., Any]
    if inspect.isasyncgenfunction(function):

        async def wrapper(*args: Any, **kwargs: Any) -> Any:
            await acheck(find_call(args, kwargs))
            responses = function(*args, **kwargs)
            try:
                async for response in responses:
                    yield response
            finally:
                await responses.aclose()

    elif iscoroutinefunction(function):

        async def wrapper(*args: Any, **kwargs: Any) -> Any:
            refusal = await acheck(find_call(args, kwargs))
            if refusal is not None:
                return refusal
            return await function(*args, **kwargs)

    elif inspect.isgeneratorfunction(function):

        def wrapper(*args: Any, **kwargs: Any) -> Any:
            check(find_call(args, kwargs))
            yield from function(*args, **kwargs)

    else:

        def wrapper(*args: Any, **kwargs: Any) -> Any:
            refusal = check(find_call(args, kwargs))
            if refusal is not None:
                return refusal
            return function(*args, **kwargs)

    return functools.wraps(function)(wrapper)  # type: ignore[return-value]
