"""Authentication over HTTP: the middleware, the decorators on sync and async views, bad
keys of every sort, header variants, sessions, CSRF, revocation, and the example's API."""

from __future__ import annotations

import contextlib
import datetime
from collections.abc import AsyncIterator, Iterator

import httpx
import pytest
from asgiref.sync import sync_to_async
from django.conf import settings
from django.core.exceptions import ImproperlyConfigured
from django.test import Client, override_settings

from hybridserver.auth import make_token
from hybridserver.testing import LiveServer
from project.catalog.models import Book
from tests.auth_utils import amake_key, amake_user, bearer, make_key
from tests.servicers_auth import PERMS

pytestmark = pytest.mark.timeout(120)

ANONYMOUS = {"user": "", "type": "django.contrib.auth.models.AnonymousUser"}
VIEWS = ["/auth/login", "/auth/login-sync", "/auth/perm", "/auth/perm-sync"]


@pytest.fixture(autouse=True)
def auth_urls() -> Iterator[None]:
    with override_settings(ROOT_URLCONF="tests.auth_views"):
        yield


def assert_unauthenticated(response: httpx.Response) -> None:
    assert response.status_code == 401, response.text
    assert response.headers["www-authenticate"] == "Bearer"
    assert response.json() == {
        "error": "Authentication credentials were not provided or are not valid."
    }


def assert_forbidden(response: httpx.Response) -> None:
    assert response.status_code == 403, response.text
    assert response.json() == {"error": "You do not have permission to perform this action."}


def as_user(username: str) -> dict[str, str]:
    return {"user": username, "type": "django.contrib.auth.models.User"}


@contextlib.asynccontextmanager
async def logged_in(server: LiveServer, user: object) -> AsyncIterator[httpx.AsyncClient]:
    """A client with a session of ``user`` (logged in by Django's test client)."""

    def login() -> str:
        client = Client()
        client.force_login(user)
        return client.cookies[settings.SESSION_COOKIE_NAME].value

    cookies = {settings.SESSION_COOKIE_NAME: await sync_to_async(login)()}
    async with httpx.AsyncClient(base_url=server.http_url, cookies=cookies, timeout=30) as client:
        yield client


# The decorators on the test views.


async def test_anonymous(http):
    for path in ("/auth/whoami", "/auth/whoami-sync"):
        assert (await http.get(path)).json() == ANONYMOUS
    for path in VIEWS:
        assert_unauthenticated(await http.get(path))


async def test_user_with_permissions(http):
    user, _, key = await amake_key(PERMS)
    for path in ["/auth/whoami", "/auth/whoami-sync", *VIEWS]:
        response = await http.get(path, headers=bearer(key))
        assert response.status_code == 200, (path, response.text)
        assert response.json() == as_user(user.username)


async def test_user_without_permission(http):
    user, _, key = await amake_key(PERMS[:1])
    for path in ("/auth/login", "/auth/login-sync"):
        assert (await http.get(path, headers=bearer(key))).json() == as_user(user.username)
    for path in ("/auth/perm", "/auth/perm-sync"):
        assert_forbidden(await http.get(path, headers=bearer(key)))


async def test_superuser(http):
    user, _, key = await amake_key(superuser=True)
    for path in ("/auth/perm", "/auth/perm-sync"):
        assert (await http.get(path, headers=bearer(key))).json() == as_user(user.username)


async def test_header_variants(http):
    user, _, key = await amake_key(PERMS)
    variants = [
        {"Authorization": f"Bearer {key}"},
        {"authorization": f"bearer {key}"},
        {"X-API-Key": key},
        {"authorization": f"Bearer  {key}"},
        {"Authorization": f"Bearer {key}", "X-API-Key": "wrong"},
        {"Authorization": "Basic dXNlcjpwdw==", "X-API-Key": key},
    ]
    for headers in variants:
        for path in ("/auth/perm", "/auth/perm-sync"):
            assert (await http.get(path, headers=headers)).json() == as_user(user.username)


async def test_bad_credentials_are_no_credentials(http):
    _, valid, key = await amake_key(PERMS)
    _, _, expired = await amake_key(PERMS, expires_in=datetime.timedelta(seconds=-1))
    _, _, revoked = await amake_key(PERMS, revoked=True)
    _, _, inactive = await amake_key(PERMS, active=False)
    wrong_secret = key[:-4] + ("AAAA" if not key.endswith("AAAA") else "BBBB")
    bad = {
        "wrong secret": bearer(wrong_secret),
        "unknown prefix": bearer("hs_00000000_" + key[12:]),
        "malformed": bearer("not-a-key"),
        "truncated": bearer(key[:-1]),
        "prefix only": bearer(valid.prefix),
        "expired": bearer(expired),
        "revoked": bearer(revoked),
        "inactive user": bearer(inactive),
        "empty bearer": {"Authorization": "Bearer"},
        "wrong x-api-key": {"X-API-Key": wrong_secret},
        "signed token, backend off": bearer(make_token(await amake_user(PERMS))),
    }
    for label, headers in bad.items():
        for path in ("/auth/whoami", "/auth/whoami-sync"):
            assert (await http.get(path, headers=headers)).json() == ANONYMOUS, label
        for path in VIEWS:
            assert_unauthenticated(await http.get(path, headers=headers))


async def test_revocation_takes_effect_on_the_next_request(http):
    user, api_key, key = await amake_key(PERMS)
    assert (await http.get("/auth/perm", headers=bearer(key))).json() == as_user(user.username)
    await api_key.arevoke()
    assert_unauthenticated(await http.get("/auth/perm", headers=bearer(key)))
    assert_unauthenticated(await http.get("/auth/perm-sync", headers=bearer(key)))


async def test_signed_token(http):
    user = await amake_user(PERMS)
    backends = [
        "hybridserver.auth.backends.APIKeyBackend",
        "hybridserver.auth.backends.SignedTokenBackend",
    ]
    with override_settings(
        ROOT_URLCONF="tests.auth_views", HYBRIDSERVER={"AUTH_BACKENDS": backends}
    ):
        response = await http.get("/auth/perm-sync", headers=bearer(make_token(user)))
        assert response.json() == as_user(user.username)


# Sessions and CSRF.


async def test_session_login_still_works(server):
    user = await amake_user(PERMS)
    async with logged_in(server, user) as http:
        for path in ["/auth/whoami", "/auth/whoami-sync", *VIEWS]:
            response = await http.get(path)
            assert response.json() == as_user(user.username), path


async def test_credentials_decide_over_the_session(server):
    session_user = await amake_user(PERMS)
    key_user, _, key = await amake_key()
    async with logged_in(server, session_user) as http:
        response = await http.get("/auth/whoami", headers=bearer(key))
        assert response.json() == as_user(key_user.username)
        # Credentials that prove nothing make the request anonymous: the session is not
        # a fallback.
        response = await http.get("/auth/whoami-sync", headers=bearer("bad"))
        assert response.json() == ANONYMOUS
        # A header that carries no bearer token is not ours: the session stays.
        basic = {"Authorization": "Basic dXNlcjpwdw=="}
        response = await http.get("/auth/whoami", headers=basic)
        assert response.json() == as_user(session_user.username)


async def test_csrf(server, http):
    user, _, key = await amake_key()
    async with logged_in(server, user) as session:
        # A session needs a CSRF token to POST...
        assert (await session.post("/auth/form")).status_code == 403
    # ...a key does not: a browser never sends one on its own.
    response = await http.post("/auth/form", headers=bearer(key))
    assert response.json() == as_user(user.username)


def test_sync_middleware_under_wsgi():
    """Django's test client runs the middleware chain synchronously (WSGI)."""
    user, _, key = make_key(PERMS)
    client = Client()
    for path in ("/auth/perm-sync", "/auth/perm", "/auth/whoami-sync"):
        response = client.get(path, HTTP_AUTHORIZATION=f"Bearer {key}")
        assert response.json() == as_user(user.username)
    response = client.get("/auth/login-sync", HTTP_X_API_KEY="hs_00000000_" + key[12:])
    assert response.status_code == 401
    assert response["WWW-Authenticate"] == "Bearer"


# The example project's JSON API.


async def test_example_api_needs_a_key(http):
    book = await Book.objects.acreate(title="Locked", author="auth-http")
    for method, path in [
        ("GET", "/api/books/"),
        ("POST", "/api/books/"),
        ("GET", f"/api/books/{book.pk}/"),
        ("PATCH", f"/api/books/{book.pk}/"),
        ("DELETE", f"/api/books/{book.pk}/"),
        ("GET", "/api/books/999999999/"),  # 401 before 404: no probing without a key
    ]:
        assert_unauthenticated(await http.request(method, path, json={"title": "x"}))


async def test_example_api_permissions(http):
    book = await Book.objects.acreate(title="Guarded", author="auth-http")
    detail = f"/api/books/{book.pk}/"
    _, _, reader = await amake_key(["catalog.view_book"])
    _, _, editor = await amake_key(["catalog.view_book", "catalog.change_book"])
    _, _, writer = await amake_key(["catalog.add_book"])
    _, _, deleter = await amake_key(["catalog.delete_book"])

    assert (await http.get("/api/books/", headers=bearer(reader))).status_code == 200
    assert (await http.get(detail, headers={"X-API-Key": reader})).json()["title"] == "Guarded"
    assert_forbidden(
        await http.post("/api/books/", json={"title": "t", "author": "a"}, headers=bearer(reader))
    )
    assert_forbidden(await http.patch(detail, json={"title": "t"}, headers=bearer(reader)))
    assert_forbidden(await http.delete(detail, headers=bearer(editor)))
    assert_forbidden(await http.get(detail, headers=bearer(writer)))

    response = await http.patch(detail, json={"title": "Edited"}, headers=bearer(editor))
    assert response.json()["title"] == "Edited"
    response = await http.post(
        "/api/books/", json={"title": "New", "author": "auth-http"}, headers=bearer(writer)
    )
    assert response.status_code == 201
    assert (await http.delete(detail, headers=bearer(deleter))).status_code == 204


async def test_example_api_with_the_fixture_key(http, auth_headers):
    response = await http.post(
        "/api/books/", json={"title": "Fixture", "author": "auth-http"}, headers=auth_headers
    )
    assert response.status_code == 201
    assert (
        await http.get(f"/api/books/{response.json()['id']}/", headers=auth_headers)
    ).status_code == 200


def test_decorators_without_the_middleware_say_so():
    middleware = [
        path
        for path in settings.MIDDLEWARE
        if path
        not in (
            "django.contrib.auth.middleware.AuthenticationMiddleware",
            "hybridserver.auth.AuthenticationMiddleware",
            "django.contrib.messages.middleware.MessageMiddleware",
        )
    ]
    with override_settings(MIDDLEWARE=middleware), pytest.raises(ImproperlyConfigured):
        Client().get("/auth/login-sync")
