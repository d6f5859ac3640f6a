"""Servicer methods, sync or async, of all four kinds, run as Django runs a view.

Each RPC gets its own ``ThreadSensitiveContext`` backed by a pooled thread lease (see
:mod:`hybridserver.threads`): plain ``def`` handlers run on that thread, and so do the
async ORM calls of ``async def`` handlers. Before the handler runs, the RPC's metadata
is authenticated once by the function that authenticates HTTP requests
(:mod:`hybridserver.auth`), and ``context.user`` is set. Exceptions become status codes
(:mod:`hybridserver.grpc.errors`), and one access-log line is written per RPC.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import time
from collections.abc import AsyncIterator, Callable, Iterator
from concurrent.futures import Future
from typing import Any, NoReturn

import grpc
from asgiref.sync import async_to_sync, sync_to_async

from hybridserver.auth.core import anonymous_user, authenticate
from hybridserver.auth.credentials import NO_CREDENTIALS, Credentials
from hybridserver.fairness import GrpcActivity
from hybridserver.grpc.context import ServicerContext, SyncAbort, SyncServicerContext
from hybridserver.grpc.errors import INTERNAL_MESSAGE, UndecodableRequest, status_for
from hybridserver.logging import access_logger, format_peer
from hybridserver.signals import NO_SIGNALS, rpc_signals
from hybridserver.threads import Lease, ThreadPool

logger = logging.getLogger("hybridserver.error")

_DONE = object()
_INFO = logging.INFO


class SyncRequestIterator(Iterator[Any]):
    """The request stream of a plain ``def`` handler: each ``next()`` awaits on the loop.
    ``activity`` counts each message, for HTTP admission control."""

    def __init__(
        self, request_iterator: AsyncIterator[Any], activity: GrpcActivity | None = None
    ) -> None:
        async def anext_request() -> Any:
            # A coroutine function, not the bound ``__anext__`` slot wrapper, which
            # async_to_sync cannot recognise as async and warns about.
            message = await request_iterator.__anext__()
            if activity is not None:
                activity.progress += 1
            return message

        self._next = async_to_sync(anext_request)

    def __next__(self) -> Any:
        try:
            return self._next()
        except StopAsyncIteration:
            raise StopIteration from None


async def _counted(messages: AsyncIterator[Any], activity: GrpcActivity) -> AsyncIterator[Any]:
    """The request stream of an ``async def`` handler, each message counted for HTTP
    admission control."""
    async for message in messages:
        activity.progress += 1
        yield message


async def _user(context: grpc.aio.ServicerContext, auth: bool) -> Any:
    """The RPC's user. Without credential metadata (or with ``GRPC_AUTH`` off) this is an
    ``AnonymousUser`` at no cost: no query, no thread."""
    credentials = (
        Credentials.from_metadata(context.invocation_metadata()) if auth else NO_CREDENTIALS
    )
    if credentials is NO_CREDENTIALS:
        # What authenticate() answers without credentials, minus its coroutine: most
        # RPCs take this path, and it is on every one of them.
        return anonymous_user()
    return await authenticate(credentials)


async def _fail(exc: BaseException, context: grpc.aio.ServicerContext, method: str) -> NoReturn:
    """Answer the client for ``exc``; always raises."""
    if isinstance(exc, SyncAbort):
        await context.abort(exc.code, exc.details, exc.trailing_metadata)
    if isinstance(exc, Exception) and not isinstance(exc, grpc.aio.AbortError):
        status = status_for(exc)
        if status is None:
            # The text and traceback are for the server log only.
            logger.error("Exception in RPC %s", method, exc_info=exc)
            status = (grpc.StatusCode.INTERNAL, INTERNAL_MESSAGE)
        await context.abort(*status)
    raise exc


class _Undecodable:
    """What a request message its deserializer could not parse becomes, for a method
    with one request message (grpc parses it before the handler runs, and answers
    UNKNOWN for an exception there)."""

    __slots__ = ()


_UNDECODABLE = _Undecodable()


def _check_decoded(request: Any) -> None:
    if request is _UNDECODABLE:
        raise UndecodableRequest


def _deserializer(
    deserialize: Callable[[bytes], Any] | None, request_streaming: bool
) -> Callable[[bytes], Any] | None:
    """``deserialize``, with a message it cannot parse answered INVALID_ARGUMENT. A
    streamed request message raises in the handler's loop over the stream."""
    if deserialize is None:
        return None

    def deserializer(data: bytes) -> Any:
        try:
            return deserialize(data)
        except Exception:
            if request_streaming:
                raise UndecodableRequest from None
            return _UNDECODABLE

    return deserializer


def _begin(
    context: grpc.aio.ServicerContext, activity: GrpcActivity | None
) -> tuple[float, str] | None:
    """The start of every RPC: counted for HTTP admission control (``activity``), and,
    if its access-log line will be written, when and from where it began.

    ``peer`` is read now: once the deadline has passed, grpc answers ''. With the access
    log off (as under load, usually) nothing is read at all.
    """
    if activity is not None:
        activity.progress += 1
    if access_logger.disabled or not access_logger.isEnabledFor(_INFO):
        return None
    return time.perf_counter(), context.peer()


def _log_access(
    context: grpc.aio.ServicerContext,
    method: str,
    started: tuple[float, str] | None,
    exc: BaseException | None,
) -> None:
    if started is None:
        return
    code = context.code()
    if code is None:
        if exc is None:
            code = grpc.StatusCode.OK
        elif isinstance(exc, asyncio.CancelledError | GeneratorExit):
            expired = context.time_remaining() is not None and context.time_remaining() <= 0
            code = grpc.StatusCode.DEADLINE_EXCEEDED if expired else grpc.StatusCode.CANCELLED
        else:
            code = grpc.StatusCode.UNKNOWN
    start, peer = started
    access_logger.info(
        '%s - "GRPC %s" %s %s',
        format_peer(peer),
        method,
        code,
        time.perf_counter() - start,
    )


def _respond_once(
    behavior: Callable[..., Any],
    method: str,
    pool: ThreadPool,
    request_streaming: bool,
    auth: bool,
    activity: GrpcActivity | None,
) -> Callable[..., Any]:
    """unary_unary and stream_unary handlers; also response-streaming handlers written
    as ``async def`` coroutines that call ``await context.write()``."""
    if inspect.iscoroutinefunction(behavior):

        async def handler(request: Any, context: grpc.aio.ServicerContext) -> Any:
            started = _begin(context, activity)
            failure = None
            try:
                _check_decoded(request)
                if activity is not None and activity.delay:
                    await activity.pace(context)
                if request_streaming and activity is not None:
                    request = _counted(request, activity)
                async with pool.request_context():
                    user = await _user(context, auth)
                    servicer_context = ServicerContext(context, method, user, activity)
                    async with rpc_signals(method, request, servicer_context):
                        return await behavior(request, servicer_context)
            except BaseException as exc:
                failure = exc
                await _fail(exc, context, method)
            finally:
                _log_access(context, method, started, failure)

        return handler

    run = sync_to_async(behavior)

    async def sync_handler(request: Any, context: grpc.aio.ServicerContext) -> Any:
        started = _begin(context, activity)
        failure = None
        try:
            _check_decoded(request)
            if activity is not None and activity.delay:
                await activity.pace(context)
            async with pool.request_context() as lease:
                if request_streaming:
                    request = SyncRequestIterator(request, activity)
                user = await _user(context, auth)
                sync_context = SyncServicerContext(
                    context, method, asyncio.get_running_loop(), user, activity
                )
                signals = rpc_signals(method, request, sync_context)
                async with signals:
                    try:
                        if signals is NO_SIGNALS:
                            # Nothing of the RPC runs after the handler: its thread
                            # can go back to the pool as soon as it returns.
                            return await lease.run_last(behavior, request, sync_context)
                        return await run(request, sync_context)
                    finally:
                        sync_context.end()
        except BaseException as exc:
            failure = exc
            await _fail(exc, context, method)
        finally:
            _log_access(context, method, started, failure)

    return sync_handler


def _respond_streaming(
    behavior: Callable[..., Any],
    method: str,
    pool: ThreadPool,
    request_streaming: bool,
    auth: bool,
    activity: GrpcActivity | None,
) -> Callable[..., AsyncIterator[Any]]:
    """unary_stream and stream_stream handlers written as generators, async or sync."""
    if inspect.isasyncgenfunction(behavior):

        async def handler(request: Any, context: grpc.aio.ServicerContext) -> AsyncIterator[Any]:
            started = _begin(context, activity)
            failure = None
            try:
                _check_decoded(request)
                if activity is not None and activity.delay:
                    await activity.pace(context)
                if request_streaming and activity is not None:
                    request = _counted(request, activity)
                async with pool.request_context():
                    user = await _user(context, auth)
                    servicer_context = ServicerContext(context, method, user, activity)
                    async with rpc_signals(method, request, servicer_context):
                        async for response in behavior(request, servicer_context):
                            if activity is not None:
                                activity.progress += 1
                                if activity.delay:
                                    await activity.pace(context)
                            yield response
            except GeneratorExit as exc:
                failure = exc
                raise
            except BaseException as exc:
                failure = exc
                await _fail(exc, context, method)
            finally:
                _log_access(context, method, started, failure)

        return handler

    run = sync_to_async(behavior)
    step = sync_to_async(next)

    async def sync_handler(request: Any, context: grpc.aio.ServicerContext) -> AsyncIterator[Any]:
        started = _begin(context, activity)
        failure = None
        try:
            _check_decoded(request)
            if activity is not None and activity.delay:
                await activity.pace(context)
            async with pool.request_context() as lease:
                if request_streaming:
                    request = SyncRequestIterator(request, activity)
                user = await _user(context, auth)
                sync_context = SyncServicerContext(
                    context, method, asyncio.get_running_loop(), user, activity
                )
                async with rpc_signals(method, request, sync_context):
                    responses = iter(await run(request, sync_context))
                    try:
                        while (response := await step(responses, _DONE)) is not _DONE:
                            if activity is not None:
                                activity.progress += 1
                                if activity.delay:
                                    await activity.pace(context)
                            yield response
                    finally:
                        sync_context.end()
                        _close_on_thread(lease, responses)
        except GeneratorExit as exc:
            failure = exc
            raise
        except BaseException as exc:
            failure = exc
            await _fail(exc, context, method)
        finally:
            _log_access(context, method, started, failure)

    return sync_handler


def _close_on_thread(lease: Lease, responses: Iterator[Any]) -> None:
    """Close a sync generator that the client left, on the thread it runs on, after its
    current step: its ``finally`` blocks may use that thread's database connection, and
    left to the garbage collector they would run late, on any thread, or never. Queued
    rather than awaited: a handler closed with GeneratorExit must not suspend."""
    close = getattr(responses, "close", None)
    if close is not None and getattr(responses, "gi_frame", True) is not None:
        lease.submit(close).add_done_callback(_log_close_failure)


def _log_close_failure(future: Future[Any]) -> None:
    if not future.cancelled() and future.exception() is not None:
        logger.error("Closing a streaming handler failed", exc_info=future.exception())


_FACTORIES = {
    (False, False): ("unary_unary", grpc.unary_unary_rpc_method_handler),
    (False, True): ("unary_stream", grpc.unary_stream_rpc_method_handler),
    (True, False): ("stream_unary", grpc.stream_unary_rpc_method_handler),
    (True, True): ("stream_stream", grpc.stream_stream_rpc_method_handler),
}


def adapt_handler(
    handler: grpc.RpcMethodHandler,
    method: str,
    pool: ThreadPool,
    *,
    auth: bool = True,
    activity: GrpcActivity | None = None,
) -> grpc.RpcMethodHandler:
    """The same method handler, run the hybridserver way. ``auth``: set ``context.user``
    from the RPC's credentials (``GRPC_AUTH``); otherwise it is always anonymous.
    ``activity``: counts the RPCs started, for HTTP admission control."""
    kind, factory = _FACTORIES[(handler.request_streaming, handler.response_streaming)]
    behavior = getattr(handler, kind)
    if handler.response_streaming and not inspect.iscoroutinefunction(behavior):
        wrapped = _respond_streaming(
            behavior, method, pool, handler.request_streaming, auth, activity
        )
    else:
        wrapped = _respond_once(
            behavior, method, pool, handler.request_streaming, auth, activity
        )
    return factory(
        wrapped,
        request_deserializer=_deserializer(
            handler.request_deserializer, handler.request_streaming
        ),
        response_serializer=handler.response_serializer,
    )
