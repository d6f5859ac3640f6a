"""API keys themselves: storage, the admin, the management commands, logs, settings and
checks. Protocol behaviour is in test_auth_http.py and test_auth_grpc.py."""

from __future__ import annotations

import hashlib
import io
import logging
import re

import grpc
import httpx
import pytest
from asgiref.sync import async_to_sync, sync_to_async
from django.contrib.admin.models import LogEntry
from django.core.checks import run_checks
from django.core.management import CommandError, call_command
from django.test import Client, override_settings

from hybridserver.auth import Credentials
from hybridserver.auth.backends import APIKeyBackend, SignedTokenBackend
from hybridserver.auth.core import get_backends
from hybridserver.auth.models import APIKey
from hybridserver.conf import hybrid_setting
from hybridserver.testing import LiveServer
from tests.auth_utils import TIMEOUT, amake_key, make_key, make_user
from tests.servicers import SERVICE as ECHO
from tests.servicers_auth import PERMS, SERVICE

pytestmark = pytest.mark.timeout(120)

KEY = re.compile(r"hs_[a-z0-9]{8}_[A-Za-z0-9_-]{43}")


async def whoami_grpc(server: LiveServer, key: str) -> bytes:
    async with grpc.aio.insecure_channel(server.grpc_target) as channel:
        login = channel.unary_unary(f"/{SERVICE}/WhoamiUnary")
        return await login(b"", metadata=(("authorization", f"Bearer {key}"),), timeout=TIMEOUT)


async def whoami_http(server: LiveServer, key: str) -> int:
    """The status of an authenticated read of the example's API."""
    async with httpx.AsyncClient(base_url=server.http_url, timeout=TIMEOUT) as client:
        return (await client.get("/api/books/", headers={"X-API-Key": key})).status_code


# Storage.


def test_keys_are_stored_hashed():
    user = make_user()
    api_key, key = APIKey.objects.create_key(user, "storage")
    assert KEY.fullmatch(key)
    assert key.startswith(api_key.prefix + "_")
    row = APIKey.objects.filter(pk=api_key.pk).values().get()
    assert row["hashed_key"] == hashlib.sha256(key.encode()).hexdigest()
    secret = key.removeprefix(api_key.prefix + "_")
    assert not any(secret in str(value) for value in row.values())
    assert "hashed" not in repr(api_key) and secret not in str(api_key)


def test_keys_are_unique():
    user = make_user()
    keys = [APIKey.objects.create_key(user, "many")[1] for _ in range(20)]
    assert len(set(keys)) == 20
    assert len({key[:11] for key in keys}) == 20


async def test_backend_refuses_without_a_query_when_malformed():
    backend = APIKeyBackend()
    for token in ("", "x", "hs_", "hs_ABCDEFGH_" + "a" * 43, "hs_abcdefgh_" + "a" * 42 + "!"):
        assert await backend.authenticate(Credentials.from_pairs([("x-api-key", token)])) is None


# The admin.


def test_admin_shows_a_new_key_once_and_stores_its_hash():
    admin = make_user(superuser=True)
    owner = make_user()
    client = Client()
    client.force_login(admin)
    response = client.post(
        "/admin/hybridserver/apikey/add/",
        {"user": owner.pk, "name": "from the admin", "expires_at_0": "", "expires_at_1": ""},
    )
    assert response.status_code == 200, response.content
    page = response.content.decode()
    keys = KEY.findall(page)
    assert len(set(keys)) == 1, page
    key = keys[0]
    api_key = APIKey.objects.get(name="from the admin", user=owner)
    assert api_key.hashed_key == hashlib.sha256(key.encode()).hexdigest()
    assert key.startswith(api_key.prefix)
    assert "no-store" in response["Cache-Control"] or "no-cache" in response["Cache-Control"]

    # Never again: not on the key's page, not in the list, not in the admin log, not in a
    # cookie.
    secret = key.removeprefix(api_key.prefix + "_")
    for url in (
        f"/admin/hybridserver/apikey/{api_key.pk}/change/",
        "/admin/hybridserver/apikey/",
        "/admin/",
    ):
        shown = client.get(url)
        assert shown.status_code == 200
        assert secret not in shown.content.decode()
        assert api_key.prefix in shown.content.decode() or url == "/admin/"
    assert not any(secret in str(morsel) for morsel in client.cookies.values())
    assert not any(secret in entry.object_repr for entry in LogEntry.objects.all())

    # And it works.
    authenticate = async_to_sync(APIKeyBackend().authenticate)
    assert authenticate(Credentials.from_pairs([("x-api-key", key)])) == owner


def test_admin_revokes():
    admin = make_user(superuser=True)
    _, api_key, _ = make_key(name="to revoke in the admin")
    client = Client()
    client.force_login(admin)
    response = client.post(
        "/admin/hybridserver/apikey/",
        {"action": "revoke_keys", "_selected_action": [api_key.pk]},
    )
    assert response.status_code == 302
    api_key.refresh_from_db()
    assert api_key.revoked and api_key.revoked_at is not None


# Management commands.


def create_key(*args: str) -> list[str]:
    out = io.StringIO()
    call_command("createapikey", *args, stdout=out)
    return out.getvalue().splitlines()


async def test_createapikey_prints_a_working_key_last(server):
    user = await sync_to_async(make_user)(["catalog.view_book"])
    lines = await sync_to_async(create_key)(user.username, "--name", "ci job")
    key = lines[-1]
    assert KEY.fullmatch(key)
    assert sum(key in line for line in lines) == 1
    api_key = await APIKey.objects.aget(name="ci job", user=user)
    assert api_key.expires_at is None
    assert await whoami_grpc(server, key) == user.username.encode()
    assert await whoami_http(server, key) == 200


def test_createapikey_expiry_and_errors():
    user = make_user()
    key = create_key(user.username, "--expires-in", "30")[-1]
    api_key = APIKey.objects.get(prefix=key[:11])
    days = (api_key.expires_at - api_key.created_at).total_seconds() / 86400
    assert 29.99 < days < 30.01
    assert api_key.name == "cli"
    with pytest.raises(CommandError, match="no user 'nobody-at-all'"):
        create_key("nobody-at-all")
    with pytest.raises(CommandError, match="at least 1 day"):
        create_key(user.username, "--expires-in", "0")


async def test_revokeapikey_takes_effect_on_the_next_request(server):
    user, api_key, key = await amake_key(["catalog.view_book"], name="to revoke")
    assert await whoami_grpc(server, key) == user.username.encode()
    assert await whoami_http(server, key) == 200
    out = io.StringIO()
    await sync_to_async(call_command)("revokeapikey", api_key.prefix, stdout=out)
    assert api_key.prefix in out.getvalue()
    assert await whoami_grpc(server, key) == b""
    assert await whoami_http(server, key) == 401


def test_revokeapikey_by_name_and_errors():
    _, api_key, _ = make_key(name="unique-name-for-revocation")
    call_command("revokeapikey", "unique-name-for-revocation", stdout=io.StringIO())
    api_key.refresh_from_db()
    assert api_key.revoked
    with pytest.raises(CommandError, match="no active API key"):
        call_command("revokeapikey", "unique-name-for-revocation")
    with pytest.raises(CommandError, match="no active API key"):
        call_command("revokeapikey", "hs_nothing1")
    make_key(name="shared-name")
    make_key(name="shared-name")
    with pytest.raises(CommandError, match="2 active API keys match 'shared-name'"):
        call_command("revokeapikey", "shared-name")


# Logs.


async def test_keys_never_reach_the_logs(server, caplog):
    _, api_key, good = await amake_key(PERMS)
    _, _, revoked = await amake_key(PERMS, revoked=True)
    wrong = good[:-6] + "ZZZZZZ"
    secrets = [good, wrong, revoked, good.split("_", 2)[2], revoked.split("_", 2)[2]]
    caplog.set_level(logging.DEBUG)
    # The server set hybridserver's own level from its LOG_LEVEL at startup.
    caplog.set_level(logging.DEBUG, logger="hybridserver")
    async with (
        grpc.aio.insecure_channel(server.grpc_target) as channel,
        httpx.AsyncClient(base_url=server.http_url, timeout=TIMEOUT) as http,
    ):
        for key in (good, wrong, revoked, "not-a-key"):
            for metadata in ((("authorization", f"Bearer {key}"),), (("x-api-key", key),)):
                for name in ("PermUnary", "PermUnarySync", "LoginUnary"):
                    try:
                        await channel.unary_unary(f"/{SERVICE}/{name}")(
                            b"", metadata=metadata, timeout=TIMEOUT
                        )
                    except grpc.aio.AioRpcError:
                        pass
                # A handler that fails with an internal error, logged with its traceback.
                with pytest.raises(grpc.aio.AioRpcError):
                    await channel.unary_unary(f"/{ECHO}/Fail")(
                        b"boom", metadata=metadata, timeout=TIMEOUT
                    )
            for headers in ({"Authorization": f"Bearer {key}"}, {"X-API-Key": key}):
                await http.get("/api/books/", headers=headers)
                await http.post("/api/books/", json={"title": ""}, headers=headers)
    assert caplog.records, "nothing was logged: the test would prove nothing"
    assert any(record.name == "hybridserver.auth" for record in caplog.records)
    assert any("GRPC" in record.getMessage() for record in caplog.records)
    for record in caplog.records:
        text = record.getMessage() + (caplog.handler.format(record) if record.exc_info else "")
        for secret in secrets:
            assert secret not in text, record
    await sync_to_async(api_key.refresh_from_db)()
    assert api_key.last_used_at is not None


def test_credentials_repr_shows_no_value():
    credentials = Credentials.from_pairs([("Authorization", "Bearer s3cr3t"), ("x-api-key", "k3y")])
    assert "s3cr3t" not in repr(credentials) and "k3y" not in repr(credentials)
    assert credentials.token == "s3cr3t"


def test_credentials_are_the_same_from_every_source():
    scope = {"type": "http", "headers": [(b"x-api-key", b"abc"), (b"host", b"x")]}
    sources = [
        Credentials.from_scope(scope),
        Credentials.from_headers({"X-API-Key": "abc"}),
        Credentials.from_metadata((("x-api-key", "abc"), ("user-agent", "grpc"))),
    ]
    for credentials in sources:
        assert dict(credentials.headers) == {"x-api-key": "abc"}
        assert credentials.token == "abc"
    assert not Credentials.from_metadata(None)
    assert not Credentials.from_headers({"Authorization": "Basic abc"})


# Settings and checks.


def test_hybrid_setting_defaults_and_overrides():
    assert hybrid_setting("AUTH_BACKENDS") == (APIKeyBackend,)
    assert hybrid_setting("GRPC_AUTH") is True
    assert [type(backend) for backend in get_backends()] == [APIKeyBackend]
    backends = ["hybridserver.auth.backends.SignedTokenBackend"]
    with override_settings(HYBRIDSERVER={"AUTH_BACKENDS": backends, "AUTH_TOKEN_MAX_AGE": 60}):
        assert hybrid_setting("AUTH_BACKENDS") == (SignedTokenBackend,)
        assert hybrid_setting("AUTH_TOKEN_MAX_AGE") == 60
        assert [type(backend) for backend in get_backends()] == [SignedTokenBackend]
    assert hybrid_setting("AUTH_BACKENDS") == (APIKeyBackend,)
    with pytest.raises(KeyError, match="AUTH_BACKEND"):
        hybrid_setting("AUTH_BACKEND")


def check_ids(**overrides: object) -> list[tuple[str, str]]:
    with override_settings(**overrides):
        return [
            (message.id, message.msg)
            for message in run_checks()
            if message.id and message.id.startswith("hybridserver.")
        ]


def test_checks():
    assert check_ids() == []
    errors = check_ids(HYBRIDSERVER={"AUTH_BACKENDS": ["hybridserver.auth.backends.Nope"]})
    assert errors[0][0] == "hybridserver.E004"
    assert "AUTH_BACKENDS" in errors[0][1] and "hybridserver.auth.backends.Nope" in errors[0][1]
    errors = check_ids(HYBRIDSERVER={"AUTH_BACKENDS": "hybridserver.auth.backends.APIKeyBackend"})
    assert errors[0][0] == "hybridserver.E003"
    errors = check_ids(HYBRIDSERVER={"GRPC_AUTH": "maybe"})
    assert errors[0][0] == "hybridserver.E003" and "GRPC_AUTH" in errors[0][1]

    from django.conf import settings

    middleware = list(settings.MIDDLEWARE)
    ours = "hybridserver.auth.AuthenticationMiddleware"
    middleware.remove(ours)
    assert check_ids(MIDDLEWARE=[ours, *middleware])[0][0] == "hybridserver.E005"
    django_auth = "django.contrib.auth.middleware.AuthenticationMiddleware"
    without_django = [path for path in middleware if path != django_auth]
    assert check_ids(MIDDLEWARE=[*without_django, ours])[0][0] == "hybridserver.E005"
