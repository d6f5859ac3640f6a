"""``@ratelimit`` on views and servicer methods of every shape, with every kind of key, and
across processes through Redis."""

from __future__ import annotations

import os
import re
import time
import uuid
from collections.abc import Iterator
from typing import Any

import grpc
import httpx
import pytest
from django.core.cache import caches
from django.test import override_settings
from google.protobuf.wrappers_pb2 import StringValue

from hybridserver.auth.keys import generate_key
from hybridserver.checks import check_ratelimit_cache
from hybridserver.config import Config, ConfigError
from hybridserver.ratelimit import grpc_peer_host, ratelimit, window
from tests.auth_utils import amake_key, amake_user, bearer
from tests.conftest import require_service
from tests.servicers_ratelimit import DAY, SERVICE, SHAPES
from tests.settings_redis import REDIS_URL

pytestmark = pytest.mark.timeout(60)

TIMEOUT = 10
Metadata = tuple[tuple[str, str], ...]

REFUSAL = re.compile(
    r"Reached limit of (\d+) calls per 86400 seconds\. "
    r"Resource will be available in (\d+) seconds\."
)


@pytest.fixture(autouse=True)
def fresh_counts() -> Iterator[None]:
    """The in-process servers count in this process's local-memory cache."""
    caches["default"].clear()
    with override_settings(ROOT_URLCONF="tests.urls"):
        yield
    caches["default"].clear()


def path(name: str) -> str:
    return f"/{SERVICE}/{name}"


async def call(
    channel: grpc.aio.Channel,
    name: str,
    request: Any = b"",
    metadata: Metadata = (),
    stream: tuple[bytes, ...] = (b"a", b"b"),
) -> Any:
    """Call a ``hybridtest.RateLimit`` method in its shape; all its answers. ``stream``:
    the messages of a request stream."""
    kind = SHAPES[name][0] if name in SHAPES else "unary"
    options = {"metadata": metadata, "timeout": TIMEOUT}
    if kind == "unary":
        return await channel.unary_unary(path(name))(request, **options)
    if kind == "server_stream":
        return [m async for m in channel.unary_stream(path(name))(request, **options)]
    if kind == "client_stream":
        return await channel.stream_unary(path(name))(iter(stream), **options)
    return [m async for m in channel.stream_stream(path(name))(iter(stream), **options)]


async def refused(channel: grpc.aio.Channel, name: str, *args: Any, **kwargs: Any) -> int:
    """Assert the call is refused as over the limit; the max_calls in the message.

    A request stream is sent empty: the server refuses before reading it, and a message
    the client sends as the refusal comes in fails in grpc.aio's client, which then
    reports INTERNAL "Internal error from Core" instead of the server's status."""
    kwargs.setdefault("stream", ())
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await call(channel, name, *args, **kwargs)
    error = info.value
    assert error.code() == grpc.StatusCode.RESOURCE_EXHAUSTED, error
    match = REFUSAL.fullmatch(error.details())
    assert match, error.details()
    retry_after = dict(error.trailing_metadata())["retry-after"]
    assert retry_after == match[2]
    assert 1 <= int(retry_after) <= DAY
    return int(match[1])


def assert_throttled(response: httpx.Response, max_calls: int) -> None:
    assert response.status_code == 429, response.text
    body = response.json()
    assert REFUSAL.fullmatch(body["error"])[1] == str(max_calls)
    assert response.headers["Retry-After"] == str(body["retry_after"])
    assert 1 <= body["retry_after"] <= DAY
    assert f"available in {body['retry_after']} seconds" in body["error"]


# Every shape


EXPECTED = {
    "unary": b"ok",
    "server_stream": [b"0", b"1"],
    "client_stream": b"a,b",
    "bidi": [b"a", b"b"],
}


@pytest.mark.parametrize("name", list(SHAPES))
async def test_every_rpc_shape(channel, name):
    expected = EXPECTED[SHAPES[name][0]]
    assert await call(channel, name) == expected
    assert await call(channel, name) == expected
    assert await refused(channel, name) == 2
    assert await refused(channel, name) == 2


@pytest.mark.parametrize("url", ["/ratelimit/default/", "/ratelimit/default-sync/"])
async def test_views_sync_and_async(http, url):
    for _ in range(2):
        response = await http.get(url)
        assert response.status_code == 200
        assert response.json() == {"user": ""}
    assert_throttled(await http.get(url), 2)
    # Another view counts on its own.
    assert (await http.get("/ratelimit/class/")).status_code == 200


async def test_method_of_a_class_based_view(http):
    assert [(await http.get("/ratelimit/class/")).status_code for _ in range(3)] == [200, 200, 429]


# Keys


@pytest.mark.parametrize("name", ["PerUser", "PerUserSync"])
async def test_per_user_rpc(channel, name):
    alice, _, alice_key = await amake_key()
    bob, _, bob_key = await amake_key()
    assert await call(channel, name, metadata=_auth(alice_key)) == alice.username.encode()
    await refused(channel, name, metadata=_auth(alice_key))
    assert await call(channel, name, metadata=_auth(bob_key)) == bob.username.encode()
    # Anonymous callers count per peer, apart from every user.
    assert await call(channel, name) == b""
    await refused(channel, name)
    await refused(channel, name, metadata=_auth(bob_key))


@pytest.mark.parametrize("url", ["/ratelimit/user/", "/ratelimit/user-sync/"])
async def test_per_user_view(http, url):
    alice, _, alice_key = await amake_key()
    bob, _, bob_key = await amake_key()
    assert (await http.get(url, headers=bearer(alice_key))).json() == {"user": alice.username}
    assert_throttled(await http.get(url, headers=bearer(alice_key)), 1)
    assert (await http.get(url, headers=bearer(bob_key))).json() == {"user": bob.username}
    assert (await http.get(url)).json() == {"user": ""}
    assert_throttled(await http.get(url), 1)
    assert_throttled(await http.get(url, headers=bearer(bob_key)), 1)


async def test_per_api_key(channel, http):
    user = await amake_user()
    keys = [(await _acreate_key(user)) for _ in range(2)]
    for key in keys:
        assert await call(channel, "PerApiKey", metadata=_auth(key)) == user.username.encode()
        await refused(channel, "PerApiKey", metadata=_auth(key))
        assert (await http.get("/ratelimit/api-key/", headers=bearer(key))).status_code == 200
        assert_throttled(await http.get("/ratelimit/api-key/", headers=bearer(key)), 1)
    # Keys that authenticate nobody count as their peer: making keys up buys nothing.
    fake, other_fake = generate_key()[0], generate_key()[0]
    assert await call(channel, "PerApiKey", metadata=_auth(fake)) == b""
    await refused(channel, "PerApiKey", metadata=_auth(other_fake))
    await refused(channel, "PerApiKey")


async def test_per_metadata(channel, http):
    assert await call(channel, "PerClient", metadata=(("x-client", "a"),)) == b""
    await refused(channel, "PerClient", metadata=(("x-client", "a"),))
    assert await call(channel, "PerClient", metadata=(("x-client", "b"),)) == b""
    # Over HTTP, metadata is a request header.
    url = "/ratelimit/header-sync/"
    assert (await http.get(url, headers={"X-Client": "a"})).status_code == 200
    assert_throttled(await http.get(url, headers={"X-Client": "a"}), 1)
    assert (await http.get(url, headers={"X-Client": "b"})).status_code == 200


async def test_per_request_field(channel):
    rpc = channel.unary_unary(path("PerField"), request_serializer=StringValue.SerializeToString)
    assert await rpc(StringValue(value="a"), timeout=TIMEOUT) == b""
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await rpc(StringValue(value="a"), timeout=TIMEOUT)
    assert info.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert await rpc(StringValue(value="b"), timeout=TIMEOUT) == b""


async def test_per_callable_key(channel):
    assert await call(channel, "PerCallable", b"a:1") == b""
    await refused(channel, "PerCallable", b"a:2")
    assert await call(channel, "PerCallable", b"b:1") == b""


async def test_group_is_shared_by_its_methods(channel):
    assert await call(channel, "SharedA") == b""
    assert await call(channel, "SharedBSync") == b""
    await refused(channel, "SharedA")
    await refused(channel, "SharedBSync")


async def test_peer_is_the_client_ip_for_both_protocols(server, http, channel):
    """The view and the RPC share a group keyed by peer: one count for 127.0.0.1, whichever
    protocol it uses; another address counts apart."""
    assert (await http.get("/ratelimit/peer/")).status_code == 200
    assert await call(channel, "PerPeer") == b""
    assert_throttled(await http.get("/ratelimit/peer/"), 2)
    await refused(channel, "PerPeer")
    transport = httpx.AsyncHTTPTransport(local_address="127.0.0.2")
    async with httpx.AsyncClient(base_url=server.http_url, transport=transport) as other:
        assert (await other.get("/ratelimit/peer/")).status_code == 200


# Units


def test_window():
    assert window(125.5, 60) == (120, 55)
    assert window(120.0, 60) == (120, 60)
    assert window(179.9, 60) == (120, 1)
    assert window(7.0, 1) == (7, 1)


def test_grpc_peer_host():
    assert grpc_peer_host("ipv4:10.0.0.1:5000") == "10.0.0.1"
    assert grpc_peer_host("ipv6:[::1]:5000") == "::1"
    assert grpc_peer_host("ipv6:%5B::1%5D:5000") == "::1"
    assert grpc_peer_host("unix:/tmp/grpc.sock") == "unix:/tmp/grpc.sock"


@pytest.mark.parametrize(
    ("args", "kwargs", "error"),
    [
        ((0, 60), {}, "max_calls must be a positive integer"),
        ((5, 0), {}, "time_period must be a positive number of seconds"),
        ((5, 1.5), {}, "time_period must be a positive number of seconds"),
        ((5, 60), {"keys": ["ip"]}, "unknown ratelimit key 'ip'"),
        ((5, 60), {"keys": ["request:"]}, "names no field"),
        ((5, 60), {"keys": "user"}, "keys must be a list"),
    ],
)
def test_bad_arguments(args, kwargs, error):
    with pytest.raises((TypeError, ValueError), match=error):
        ratelimit(*args, **kwargs)


def test_neither_view_nor_servicer_method():
    @ratelimit(1, 60)
    def function(value: int) -> int:
        return value

    with pytest.raises(TypeError, match="Django views"):
        function(1)


def test_cache_setting():
    assert Config().ratelimit_cache == "default"
    with pytest.raises(ConfigError, match="RATELIMIT_CACHE"):
        Config.resolve("a:b", user_settings={"RATELIMIT_CACHE": ""}, environ={}, flags={})
    with override_settings(HYBRIDSERVER={"RATELIMIT_CACHE": "redis"}):
        [error] = check_ratelimit_cache()
    assert error.id == "hybridserver.E010"
    assert "'redis'" in error.msg


# Across processes


@pytest.fixture
def redis_env() -> Iterator[dict[str, str]]:
    """The environment of servers that share a Redis cache (``tests.settings_redis``), with
    a key prefix of this test's own; ``redis_env["client"]`` is not set: use :func:`redis`.

    Skips when Redis is unreachable, or fails under ``CI=true``.
    """
    url = os.environ.get("TEST_REDIS_URL", REDIS_URL)
    # The probe imports the client too: without the package, the same skip (or failure).
    require_service(f"Redis at {url}", lambda: _redis(url).ping())
    client = _redis(url)
    prefix = f"hybridserver-test-{uuid.uuid4().hex}"
    try:
        yield {
            "DJANGO_SETTINGS_MODULE": "tests.settings_redis",
            "TEST_REDIS_URL": url,
            "TEST_REDIS_PREFIX": prefix,
        }
    finally:
        for key in client.scan_iter(f"{prefix}:*"):
            client.delete(key)
        client.close()


def _redis(url: str) -> Any:
    import redis

    return redis.Redis.from_url(url, socket_connect_timeout=2, socket_timeout=5)


@pytest.mark.slow
@pytest.mark.timeout(120)
def test_limit_holds_across_processes(server_process, redis_env):
    """Two servers, one Redis: 5 calls per window in all, whichever server takes them."""
    with server_process(env=redis_env) as a, server_process(env=redis_env) as b:
        # gRPC: 3 calls to A, 2 to B pass; the 6th is refused on both.
        with (
            grpc.insecure_channel(a.grpc_target) as to_a,
            grpc.insecure_channel(b.grpc_target) as to_b,
        ):
            for channel in (to_a, to_a, to_a, to_b, to_b):
                assert channel.unary_unary(path("Cross"))(b"", timeout=TIMEOUT) == b""
            for channel in (to_b, to_a):
                with pytest.raises(grpc.RpcError) as info:
                    channel.unary_unary(path("Cross"))(b"", timeout=TIMEOUT)
                assert info.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
                assert REFUSAL.fullmatch(info.value.details())[1] == "5"
        # HTTP, its own group: the same.
        statuses = [
            httpx.get(f"{server.http_url}/ratelimit/cross/", timeout=TIMEOUT).status_code
            for server in (a, a, a, b, b, b, a)
        ]
        assert statuses == [200] * 5 + [429, 429]


@pytest.mark.slow
@pytest.mark.timeout(120)
@pytest.mark.parametrize("name", ["CrossBurst", "CrossBurstSync"])
def test_concurrent_calls_across_processes(server_process, redis_env, name):
    """40 calls at once, half to each server: exactly 5 pass. And the window's key lives as
    long as the window, however often it is counted."""
    with server_process(env=redis_env) as a, server_process(env=redis_env) as b:
        with (
            grpc.insecure_channel(a.grpc_target) as to_a,
            grpc.insecure_channel(b.grpc_target) as to_b,
        ):
            calls = [
                channel.unary_unary(path(name)).future(b"", timeout=TIMEOUT)
                for _ in range(20)
                for channel in (to_a, to_b)
            ]
            codes = [call.code() for call in calls]
    assert codes.count(grpc.StatusCode.OK) == 5, codes
    assert codes.count(grpc.StatusCode.RESOURCE_EXHAUSTED) == 35, codes

    client = _redis(redis_env["TEST_REDIS_URL"])
    [key] = client.keys(f"{redis_env['TEST_REDIS_PREFIX']}:*")
    assert int(client.get(key)) == 40
    assert abs(client.ttl(key) - (window(time.time(), DAY)[1] + 1)) <= 2


def _auth(key: str) -> Metadata:
    return (("authorization", f"Bearer {key}"),)


async def _acreate_key(user: Any) -> str:
    from hybridserver.auth.models import APIKey

    return (await APIKey.objects.acreate_key(user, "ratelimit"))[1]
