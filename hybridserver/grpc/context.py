"""The ``context`` that servicer methods receive.

grpc.aio's own context is a Cython object that takes no new attributes; handlers get this
thin wrapper, which passes every grpc attribute through. Plain ``def`` handlers get
:class:`SyncServicerContext`, whose coroutine methods (``abort``, ``read``, ``write``,
``send_initial_metadata``) block instead, as in grpc's thread-pool server.
"""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine, Sequence
from typing import Any, NoReturn

import grpc

from hybridserver.fairness import GrpcActivity


class ServicerContext:
    """grpc.aio's ``ServicerContext``, for one RPC."""

    __slots__ = ("_activity", "_context", "method", "user")

    def __init__(
        self,
        context: grpc.aio.ServicerContext,
        method: str,
        user: Any = None,
        activity: GrpcActivity | None = None,
    ) -> None:
        self._context = context
        #: The full method name, ``/package.Service/Method``.
        self.method = method
        #: The Django user the RPC's credentials prove (``hybridserver.auth``), or an
        #: ``AnonymousUser``, as ``request.user`` in a view.
        self.user = user
        # Counts each message read or written, for HTTP admission control, and paces
        # the messages written (hybridserver.fairness.GrpcActivity).
        self._activity = activity

    async def read(self) -> Any:
        message = await self._context.read()
        if self._activity is not None and message is not grpc.aio.EOF:
            self._activity.progress += 1
        return message

    async def write(self, message: Any) -> None:
        activity = self._activity
        if activity is not None:
            activity.progress += 1
            if activity.delay:
                await activity.pace(self._context)
        await self._context.write(message)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._context, name)

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.method}>"


class SyncAbort(Exception):
    """Raised by ``SyncServicerContext.abort``; the async side finishes the abort."""

    def __init__(
        self, code: grpc.StatusCode, details: str, trailing_metadata: Sequence[Any]
    ) -> None:
        super().__init__(code, details)
        self.code = code
        self.details = details
        self.trailing_metadata = trailing_metadata


class SyncServicerContext(ServicerContext):
    """The context of a plain ``def`` handler, running in a worker thread."""

    __slots__ = ("_ended", "_loop")

    def __init__(
        self,
        context: grpc.aio.ServicerContext,
        method: str,
        loop: asyncio.AbstractEventLoop,
        user: Any = None,
        activity: GrpcActivity | None = None,
    ) -> None:
        super().__init__(context, method, user, activity)
        self._loop = loop
        self._ended = False

    def end(self) -> None:
        """Called on the loop when the RPC is over for the client: answered, cancelled or
        past its deadline. The thread may still be running the handler."""
        self._ended = True

    def _on_loop(self, coroutine: Coroutine[Any, Any, Any]) -> Any:
        return asyncio.run_coroutine_threadsafe(coroutine, self._loop).result()

    def abort(
        self, code: grpc.StatusCode, details: str = "", trailing_metadata: Sequence[Any] = ()
    ) -> NoReturn:
        raise SyncAbort(code, details, trailing_metadata)

    def abort_with_status(self, status: grpc.Status) -> NoReturn:
        raise SyncAbort(status.code, status.details, status.trailing_metadata)

    def send_initial_metadata(self, initial_metadata: Sequence[Any]) -> None:
        self._on_loop(self._context.send_initial_metadata(initial_metadata))

    def read(self) -> Any:  # type: ignore[override]
        return self._on_loop(super().read())

    def write(self, message: Any) -> None:  # type: ignore[override]
        self._on_loop(super().write(message))

    def is_active(self) -> bool:
        # grpc.aio's done() stays False while a cancelled RPC's handler runs on.
        return not self._ended and not self._context.done()
