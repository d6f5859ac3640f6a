"""``hybridtest.Auth``: the auth decorators on every handler shape, over raw bytes.

Each base handler answers with the caller's username (``b""`` for anonymous), and exists
as ``async def`` and plain ``def``, in every RPC kind. ``HANDLERS`` registers each base
handler three times: undecorated (``Whoami...``), with ``@login_required``
(``Login...``) and with ``@permission_required(*PERMS)`` (``Perm...``).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from typing import Any

import grpc

from hybridserver.auth import login_required, permission_required

SERVICE = "hybridtest.Auth"
PERMS = ("catalog.view_book", "catalog.add_book")


def _name(context: Any) -> bytes:
    return context.user.get_username().encode()


async def unary(request: bytes, context: Any) -> bytes:
    return _name(context)


def unary_sync(request: bytes, context: Any) -> bytes:
    return _name(context)


async def server_stream(request: bytes, context: Any) -> AsyncIterator[bytes]:
    yield _name(context)
    yield b"done"


async def server_stream_writes(request: bytes, context: Any) -> None:
    await context.write(_name(context))
    await context.write(b"done")


def server_stream_sync(request: bytes, context: Any) -> Iterator[bytes]:
    yield _name(context)
    yield b"done"


async def client_stream(requests: AsyncIterator[bytes], context: Any) -> bytes:
    return b",".join([_name(context)] + [message async for message in requests])


def client_stream_sync(requests: Iterator[bytes], context: Any) -> bytes:
    return b",".join([_name(context), *requests])


async def bidi(requests: AsyncIterator[bytes], context: Any) -> AsyncIterator[bytes]:
    yield _name(context)
    async for message in requests:
        yield message


def bidi_sync(requests: Iterator[bytes], context: Any) -> Iterator[bytes]:
    yield _name(context)
    yield from requests


async def user_type(request: bytes, context: Any) -> bytes:
    """The class of ``context.user``, for comparing with what a view gets."""
    user = context.user
    return f"{type(user).__module__}.{type(user).__qualname__}".encode()


_unary = grpc.unary_unary_rpc_method_handler
_server_stream = grpc.unary_stream_rpc_method_handler
_client_stream = grpc.stream_unary_rpc_method_handler
_bidi = grpc.stream_stream_rpc_method_handler

#: Method suffix -> (base handler, handler factory, kind).
SHAPES = {
    "Unary": (unary, _unary, "unary"),
    "UnarySync": (unary_sync, _unary, "unary"),
    "ServerStream": (server_stream, _server_stream, "server_stream"),
    "ServerStreamWrites": (server_stream_writes, _server_stream, "server_stream"),
    "ServerStreamSync": (server_stream_sync, _server_stream, "server_stream"),
    "ClientStream": (client_stream, _client_stream, "client_stream"),
    "ClientStreamSync": (client_stream_sync, _client_stream, "client_stream"),
    "Bidi": (bidi, _bidi, "bidi"),
    "BidiSync": (bidi_sync, _bidi, "bidi"),
}

DECORATORS = {
    "Whoami": lambda handler: handler,
    "Login": login_required,
    "Perm": permission_required(*PERMS),
}

HANDLERS = {
    f"{prefix}{shape}": factory(decorate(base))
    for prefix, decorate in DECORATORS.items()
    for shape, (base, factory, _) in SHAPES.items()
}
HANDLERS["UserType"] = _unary(user_type)


def register(server: Any) -> None:
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(SERVICE, HANDLERS),))
