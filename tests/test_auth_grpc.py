"""Authentication over gRPC: ``context.user``, the decorators on every handler shape, bad
keys of every sort, metadata variants, revocation, and the example's BookService."""

from __future__ import annotations

import datetime
from collections.abc import Sequence
from typing import Any

import grpc
import pytest
from asgiref.sync import sync_to_async
from django.test import override_settings

from hybridserver.auth import make_token
from hybridserver.auth.models import APIKey
from hybridserver.testing import LiveServer
from project.catalog.grpc_gen.catalog.v1 import catalog_pb2, catalog_pb2_grpc
from tests.auth_utils import TIMEOUT, amake_key, amake_user
from tests.servicers_auth import PERMS, SERVICE, SHAPES

pytestmark = pytest.mark.timeout(120)

Metadata = Sequence[tuple[str, str]]


def bearer(key: str) -> Metadata:
    return (("authorization", f"Bearer {key}"),)


async def call(
    channel: grpc.aio.Channel,
    name: str,
    metadata: Metadata = (),
    requests: Sequence[bytes] = (b"a", b"b"),
) -> list[bytes]:
    """Call ``hybridtest.Auth/<name>`` in the shape its name says; all answers, in order."""
    kind = SHAPES[name.removeprefix("Whoami").removeprefix("Login").removeprefix("Perm")][2]
    path = f"/{SERVICE}/{name}"
    if kind == "unary":
        return [await channel.unary_unary(path)(b"", metadata=metadata, timeout=TIMEOUT)]
    if kind == "server_stream":
        stream = channel.unary_stream(path)(b"", metadata=metadata, timeout=TIMEOUT)
        return [message async for message in stream]
    if kind == "client_stream":
        unary = channel.stream_unary(path)
        return [await unary(iter(requests), metadata=metadata, timeout=TIMEOUT)]
    stream = channel.stream_stream(path)(iter(requests), metadata=metadata, timeout=TIMEOUT)
    return [message async for message in stream]


def expected(username: str, name: str) -> list[bytes]:
    """What ``call`` returns when the handler runs as ``username``."""
    kind = SHAPES[name.removeprefix("Whoami").removeprefix("Login").removeprefix("Perm")][2]
    user = username.encode()
    return {
        "unary": [user],
        "server_stream": [user, b"done"],
        "client_stream": [b",".join([user, b"a", b"b"])],
        "bidi": [user, b"a", b"b"],
    }[kind]


async def refused(channel: grpc.aio.Channel, name: str, metadata: Metadata = ()) -> Any:
    """The status code that refuses the call (fails the test if it succeeds)."""
    # No request messages: grpc.aio clients may report INTERNAL instead of the server's
    # status when they write after the server has ended the call
    # (https://github.com/grpc/grpc/issues/36066).
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await call(channel, name, metadata, requests=())
    return info.value.code()


ALL_SHAPES = list(SHAPES)


@pytest.mark.parametrize("shape", ALL_SHAPES)
async def test_anonymous(channel, shape):
    assert await call(channel, f"Whoami{shape}") == expected("", shape)
    code = await refused(channel, f"Login{shape}")
    assert code == grpc.StatusCode.UNAUTHENTICATED
    # Anonymous is "not authenticated", never "permission denied".
    assert await refused(channel, f"Perm{shape}") == grpc.StatusCode.UNAUTHENTICATED


@pytest.mark.parametrize("shape", ALL_SHAPES)
async def test_user_with_permissions(channel, shape):
    user, _, key = await amake_key(PERMS)
    for prefix in ("Whoami", "Login", "Perm"):
        assert await call(channel, f"{prefix}{shape}", bearer(key)) == expected(
            user.username, shape
        )


@pytest.mark.parametrize("shape", ALL_SHAPES)
async def test_user_without_permission(channel, shape):
    # One of the two permissions is not enough.
    user, _, key = await amake_key(PERMS[:1])
    assert await call(channel, f"Login{shape}", bearer(key)) == expected(user.username, shape)
    assert await refused(channel, f"Perm{shape}", bearer(key)) == grpc.StatusCode.PERMISSION_DENIED


async def test_superuser_has_every_permission(channel):
    user, _, key = await amake_key(superuser=True)
    for shape in ALL_SHAPES:
        assert await call(channel, f"Perm{shape}", bearer(key)) == expected(user.username, shape)


async def test_status_details(channel):
    _, _, key = await amake_key()
    with pytest.raises(grpc.aio.AioRpcError) as anonymous:
        await call(channel, "LoginUnary")
    assert "not provided or are not valid" in anonymous.value.details()
    with pytest.raises(grpc.aio.AioRpcError) as denied:
        await call(channel, "PermUnarySync", bearer(key))
    assert denied.value.details() == "You do not have permission to perform this action."


async def bad_credentials() -> dict[str, Metadata]:
    """Metadata that must count as no credentials at all."""
    _, valid, key = await amake_key(PERMS)
    _, _, expired = await amake_key(PERMS, expires_in=datetime.timedelta(seconds=-1))
    _, _, revoked = await amake_key(PERMS, revoked=True)
    _, _, inactive = await amake_key(PERMS, active=False)
    wrong_secret = key[:-4] + ("AAAA" if not key.endswith("AAAA") else "BBBB")
    unknown_prefix = "hs_00000000_" + key[12:]
    return {
        "wrong secret": bearer(wrong_secret),
        "unknown prefix": bearer(unknown_prefix),
        "malformed": bearer("not-a-key"),
        "truncated": bearer(key[:-1]),
        "too long": bearer(key + "x"),
        "prefix only": bearer(valid.prefix),
        "expired": bearer(expired),
        "revoked": bearer(revoked),
        "inactive user": bearer(inactive),
        "empty bearer": (("authorization", "Bearer "),),
        "other scheme": (("authorization", f"Basic {key}"),),
        "empty x-api-key": (("x-api-key", ""),),
        "wrong x-api-key": (("x-api-key", wrong_secret),),
        "signed token, backend off": bearer(make_token(await amake_user(PERMS))),
    }


async def test_bad_credentials_are_no_credentials(channel):
    for label, metadata in (await bad_credentials()).items():
        for shape in ("Unary", "UnarySync", "ServerStreamSync", "Bidi"):
            assert await call(channel, f"Whoami{shape}", metadata) == expected("", shape), label
            code = await refused(channel, f"Login{shape}", metadata)
            assert code == grpc.StatusCode.UNAUTHENTICATED, label
            code = await refused(channel, f"Perm{shape}", metadata)
            assert code == grpc.StatusCode.UNAUTHENTICATED, label


async def test_metadata_variants(channel):
    user, _, key = await amake_key(PERMS)
    variants = [
        (("authorization", f"Bearer {key}"),),
        (("authorization", f"bearer {key}"),),
        (("authorization", f"Bearer  {key} "),),
        (("x-api-key", key),),
        # Authorization wins over X-API-Key when both are sent...
        (("authorization", f"Bearer {key}"), ("x-api-key", "wrong")),
        # ...unless it is not a bearer token.
        (("authorization", "Basic dXNlcjpwdw=="), ("x-api-key", key)),
    ]
    for metadata in variants:
        for shape in ("Unary", "UnarySync"):
            assert await call(channel, f"Perm{shape}", metadata) == [user.username.encode()]


async def test_user_type_matches_views(channel):
    _, _, key = await amake_key()
    user_type = channel.unary_unary(f"/{SERVICE}/UserType")
    anonymous = await user_type(b"", timeout=TIMEOUT)
    assert anonymous == b"django.contrib.auth.models.AnonymousUser"
    authenticated = await user_type(b"", metadata=bearer(key), timeout=TIMEOUT)
    assert authenticated == b"django.contrib.auth.models.User"


async def test_revocation_takes_effect_on_the_next_rpc(channel):
    user, api_key, key = await amake_key(PERMS)
    assert await call(channel, "PermUnary", bearer(key)) == [user.username.encode()]
    assert await call(channel, "PermServerStreamSync", bearer(key)) == [
        user.username.encode(),
        b"done",
    ]
    await api_key.arevoke()
    assert await refused(channel, "PermUnary", bearer(key)) == grpc.StatusCode.UNAUTHENTICATED
    code = await refused(channel, "PermServerStreamSync", bearer(key))
    assert code == grpc.StatusCode.UNAUTHENTICATED


async def test_deactivating_the_user_takes_effect_on_the_next_rpc(channel):
    user, _, key = await amake_key(PERMS)
    assert await call(channel, "LoginUnary", bearer(key)) == [user.username.encode()]
    user.is_active = False
    await user.asave(update_fields=["is_active"])
    assert await refused(channel, "LoginUnary", bearer(key)) == grpc.StatusCode.UNAUTHENTICATED


async def test_no_credentials_cost_no_thread(server, channel):
    """Without credential metadata, authentication runs no query and borrows no thread."""
    pool = server.app.pool
    for _ in range(20):
        assert await call(channel, "WhoamiUnary") == [b""]
        assert await refused(channel, "LoginUnary") == grpc.StatusCode.UNAUTHENTICATED
        assert await refused(channel, "PermBidi") == grpc.StatusCode.UNAUTHENTICATED
    assert pool.size == 0
    # The measure works: a key is looked up on a pooled thread.
    _, _, key = await amake_key()
    assert await call(channel, "WhoamiUnary", bearer(key)) != [b""]
    assert pool.size == 1


async def test_last_used_at_is_written_at_most_once_a_minute(channel):
    _, api_key, key = await amake_key()
    assert api_key.last_used_at is None
    await call(channel, "LoginUnary", bearer(key))
    first = (await APIKey.objects.aget(pk=api_key.pk)).last_used_at
    assert first is not None
    await call(channel, "LoginUnary", bearer(key))
    await call(channel, "LoginUnarySync", bearer(key))
    assert (await APIKey.objects.aget(pk=api_key.pk)).last_used_at == first
    # Once it is a minute old, the next use records itself again.
    stale = first - datetime.timedelta(minutes=2)
    await APIKey.objects.filter(pk=api_key.pk).aupdate(last_used_at=stale)
    await call(channel, "LoginUnary", bearer(key))
    assert (await APIKey.objects.aget(pk=api_key.pk)).last_used_at > first


async def test_grpc_auth_off():
    _, _, key = await amake_key(superuser=True)
    async with (
        LiveServer("project.asgi", grpc_auth=False) as live,
        grpc.aio.insecure_channel(live.grpc_target) as channel,
    ):
        assert await call(channel, "WhoamiUnary", bearer(key)) == [b""]
        code = await refused(channel, "LoginUnarySync", bearer(key))
        assert code == grpc.StatusCode.UNAUTHENTICATED


async def test_signed_tokens(channel):
    backends = [
        "hybridserver.auth.backends.APIKeyBackend",
        "hybridserver.auth.backends.SignedTokenBackend",
    ]
    user = await amake_user(PERMS)
    token = make_token(user)
    with override_settings(HYBRIDSERVER={"AUTH_BACKENDS": backends}):
        assert await call(channel, "PermUnary", bearer(token)) == [user.username.encode()]
        assert await call(channel, "PermBidiSync", (("x-api-key", token),)) == expected(
            user.username, "BidiSync"
        )
        # Tampered with:
        assert await call(channel, "WhoamiUnary", bearer(token[:-2] + "xx")) == [b""]
        # A new password ends every token, as it ends every session.
        user.set_password("another password")
        await user.asave()
        assert await call(channel, "WhoamiUnary", bearer(token)) == [b""]
        fresh = make_token(user)
        assert await call(channel, "WhoamiUnary", bearer(fresh)) == [user.username.encode()]
    # Wide margins either side of the limit, so a slow machine cannot age a token past it.
    with override_settings(HYBRIDSERVER={"AUTH_BACKENDS": backends, "AUTH_TOKEN_MAX_AGE": 60}):
        old = await sync_to_async(_token_issued_ago)(user, 120)
        assert await call(channel, "WhoamiUnary", bearer(old)) == [b""]
        recent = await sync_to_async(_token_issued_ago)(user, 5)
        assert await call(channel, "WhoamiUnary", bearer(recent)) == [user.username.encode()]


def _token_issued_ago(user: Any, seconds: int) -> str:
    """A token as :func:`make_token` would have made it ``seconds`` ago."""
    import time

    from django.core import signing

    from hybridserver.auth.tokens import SALT, token_payload

    class Earlier(signing.TimestampSigner):
        def timestamp(self) -> str:
            return signing.b62_encode(int(time.time()) - seconds)

    return Earlier(salt=SALT).sign_object(token_payload(user))


# The example project's BookService: every RPC needs a key.


async def _book_calls(
    channel: grpc.aio.Channel, metadata: Metadata, *, streams: bool = True
) -> dict[str, Any]:
    """The outcome of each BookService RPC: its answer or its status code. With
    ``streams=False`` the request streams are empty (see :func:`refused`)."""
    stub = catalog_pb2_grpc.BookServiceStub(channel)
    outcomes: dict[str, Any] = {}

    async def outcome(name: str, coroutine: Any) -> None:
        try:
            outcomes[name] = await coroutine
        except grpc.aio.AioRpcError as exc:
            outcomes[name] = exc.code()

    async def collect(stream: Any) -> list[Any]:
        return [message async for message in stream]

    def requests() -> Any:
        if streams:
            yield catalog_pb2.CreateBookRequest(title="Auth", author="auth-test")

    await outcome("CreateBooks", stub.CreateBooks(requests(), metadata=metadata, timeout=TIMEOUT))
    await outcome(
        "GetBook",
        stub.GetBook(catalog_pb2.GetBookRequest(id=1_000_000), metadata=metadata, timeout=TIMEOUT),
    )
    await outcome(
        "ListBooks",
        collect(
            stub.ListBooks(
                catalog_pb2.ListBooksRequest(author="auth-test", limit=1),
                metadata=metadata,
                timeout=TIMEOUT,
            )
        ),
    )
    await outcome(
        "LookupBooks",
        collect(
            stub.LookupBooks(
                iter([catalog_pb2.GetBookRequest(id=1_000_000)] if streams else []),
                metadata=metadata,
                timeout=TIMEOUT,
            )
        ),
    )
    return outcomes


async def test_book_service_needs_a_key(channel):
    outcomes = await _book_calls(channel, (), streams=False)
    assert outcomes == dict.fromkeys(
        ["CreateBooks", "GetBook", "ListBooks", "LookupBooks"], grpc.StatusCode.UNAUTHENTICATED
    )


async def test_book_service_reader(channel):
    _, _, key = await amake_key(["catalog.view_book"])
    outcomes = await _book_calls(channel, bearer(key), streams=False)
    assert outcomes["CreateBooks"] == grpc.StatusCode.PERMISSION_DENIED
    assert outcomes["GetBook"] == grpc.StatusCode.NOT_FOUND  # allowed, then not found
    assert isinstance(outcomes["ListBooks"], list)
    stub = catalog_pb2_grpc.BookServiceStub(channel)
    lookups = stub.LookupBooks(
        iter([catalog_pb2.GetBookRequest(id=1_000_000)]), metadata=bearer(key), timeout=TIMEOUT
    )
    assert [response.found async for response in lookups] == [False]


async def test_book_service_writer(channel, auth_metadata):
    outcomes = await _book_calls(channel, auth_metadata)
    assert outcomes["CreateBooks"].created == 1
    assert len(outcomes["ListBooks"]) == 1
