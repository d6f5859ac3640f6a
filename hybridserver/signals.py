"""Signals sent around every RPC, as Django sends ``request_started`` and
``request_finished`` around every HTTP request. The names are django-grpc's.

Each is sent for every RPC of every kind (unary, server-streaming, client-streaming,
bidirectional), whether the servicer method is ``async def`` or plain ``def``, with:

- ``sender``: :class:`hybridserver.grpc.server.GrpcServer` (the class, as Django's
  handlers send their own class);
- ``method``: the full method name, ``"/package.Service/Method"``;
- ``request``: the request message, or for client-streaming and bidirectional RPCs the
  request iterator the servicer method reads (a receiver must not consume it);
- ``context``: the ``context`` the servicer method receives
  (:class:`~hybridserver.grpc.context.ServicerContext`, or
  :class:`~hybridserver.grpc.context.SyncServicerContext` for a plain ``def`` method).

Receivers may be ``async def`` or plain ``def``. They run inside the RPC's
``ThreadSensitiveContext``: plain ``def`` receivers run on the RPC's own thread, the one
its sync code and ORM queries use, so per-RPC database work in a receiver is safe.

``grpc_request_started``
    Before the servicer method is called. Sent with ``Signal.asend``: as with Django's
    ``request_started``, an exception in a receiver fails the request. The RPC ends
    with ``INTERNAL`` and the generic "Internal server error" (the exception is logged
    by ``hybridserver.error``, never shown to the client), the servicer method is not
    called, and neither of the other two signals is sent.

``grpc_got_request_exception``
    When the servicer method raises an exception that reaches the client as
    ``INTERNAL``, that is, an unexpected one: as Django sends ``got_request_exception``
    for a 500 but not for ``Http404`` or ``PermissionDenied``, it is not sent for
    ``context.abort()`` or for the Django exceptions hybridserver maps to a status code
    (``ObjectDoesNotExist`` -> ``NOT_FOUND`` and so on; see
    :mod:`hybridserver.grpc.errors`), nor for cancelled RPCs. Extra argument:
    ``exception``. Sent with ``Signal.asend_robust`` before the client gets its status:
    a failing receiver is logged by ``django.dispatch`` and cannot change what the
    client sees.

``grpc_request_finished``
    After the servicer method has returned, raised, or been cancelled, once for every
    RPC that ``grpc_request_started`` was sent for. Sent with ``Signal.asend_robust``:
    Django sends ``request_finished`` once the response has gone out, so a failing
    receiver cannot change it; here it runs just before the last message or the status
    is sent, so it must be robust to leave the client's answer alone.

When a signal has no receivers nothing is sent at all: the check is a list lookup, so
an unobserved signal costs next to nothing per RPC. With none of the three observed, a
plain ``def`` unary or client-streaming method is the RPC's last sync call, and its
thread goes back to the pool as soon as it returns
(:meth:`hybridserver.threads.Lease.run_last`); with a receiver connected, the thread
stays with the RPC until ``grpc_request_finished`` has been sent, for the receivers
that run on it.
"""

from __future__ import annotations

import contextlib
from typing import Any

import grpc
from django.dispatch import Signal

from hybridserver.grpc.context import SyncAbort
from hybridserver.grpc.errors import status_for

__all__ = ["grpc_got_request_exception", "grpc_request_finished", "grpc_request_started"]

grpc_request_started = Signal()
grpc_request_finished = Signal()
grpc_got_request_exception = Signal()


def _sender() -> type:
    # Imported late: the gRPC server module imports the handlers, which import this one.
    from hybridserver.grpc.server import GrpcServer

    return GrpcServer


def _unexpected(exc: BaseException) -> bool:
    """True for what the client sees as INTERNAL (see ``handlers._fail``)."""
    return (
        isinstance(exc, Exception)
        and not isinstance(exc, SyncAbort | grpc.aio.AbortError)
        and status_for(exc) is None
    )


class _RpcSignals:
    """``async with``: started on the way in; exception and finished on the way out."""

    __slots__ = ("_arguments",)

    def __init__(self, method: str, request: Any, context: Any) -> None:
        self._arguments = {"method": method, "request": request, "context": context}

    async def __aenter__(self) -> None:
        if grpc_request_started.receivers:
            await grpc_request_started.asend(_sender(), **self._arguments)

    async def __aexit__(self, exc_type: Any, exc: BaseException | None, tb: Any) -> None:
        if exc is not None and grpc_got_request_exception.receivers and _unexpected(exc):
            await grpc_got_request_exception.asend_robust(
                _sender(), exception=exc, **self._arguments
            )
        if grpc_request_finished.receivers:
            await grpc_request_finished.asend_robust(_sender(), **self._arguments)


#: What :func:`rpc_signals` returns while no receiver is connected.
NO_SIGNALS: contextlib.nullcontext[None] = contextlib.nullcontext()


def rpc_signals(
    method: str, request: Any, context: Any
) -> _RpcSignals | contextlib.nullcontext[None]:
    """What hybridserver's handlers wrap each servicer method call in:
    ``async with rpc_signals(method, request, context): ...``.

    Enter it inside the RPC's ``ThreadSensitiveContext``. With no receivers connected
    to any of the three signals it is a shared do-nothing object.
    """
    if (
        grpc_request_started.receivers
        or grpc_request_finished.receivers
        or grpc_got_request_exception.receivers
    ):
        return _RpcSignals(method, request, context)
    return NO_SIGNALS
