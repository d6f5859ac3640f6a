"""``hybridserver.auth.AuthenticationMiddleware``: API credentials for Django views.

Place it after ``django.contrib.auth.middleware.AuthenticationMiddleware``, best last:
Django's middleware before it then runs as one run (:mod:`hybridserver.middleware`). A
request that carries credentials (``Authorization: Bearer`` or ``X-API-Key``) is the
user they prove, or anonymous if they prove nothing: the session is then ignored. Any
other request keeps Django's session user, so admin and cookie logins work as before.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from asgiref.sync import async_to_sync, iscoroutinefunction, markcoroutinefunction
from django.http import HttpRequest, HttpResponse

from hybridserver.auth.core import authenticate
from hybridserver.auth.credentials import CREDENTIAL_HEADERS, Credentials

# Read from META rather than request.headers, which would first copy every header.
_META_KEYS = tuple((name, "HTTP_" + name.upper().replace("-", "_")) for name in CREDENTIAL_HEADERS)


class AuthenticationMiddleware:
    """Sets ``request.user`` and ``request.auser()`` from API credentials, if any; runs
    without a thread hop under ASGI and synchronously under WSGI."""

    sync_capable = True
    async_capable = True

    def __init__(self, get_response: Callable[[HttpRequest], Any]) -> None:
        self.get_response = get_response
        self.async_mode = iscoroutinefunction(get_response)
        if self.async_mode:
            markcoroutinefunction(self)

    def __call__(self, request: HttpRequest) -> Any:
        if self.async_mode:
            return self.__acall__(request)
        credentials = _credentials(request)
        if credentials:
            _set_user(request, async_to_sync(authenticate)(credentials))
        return self.get_response(request)

    async def __acall__(self, request: HttpRequest) -> HttpResponse:
        credentials = _credentials(request)
        if credentials:
            _set_user(request, await authenticate(credentials))
        return await self.get_response(request)


def _credentials(request: HttpRequest) -> Credentials:
    meta = request.META
    return Credentials.from_pairs((name, meta[key]) for name, key in _META_KEYS if key in meta)


def _set_user(request: Any, user: Any) -> None:
    async def auser() -> Any:
        return user

    request.user = request._cached_user = request._acached_user = user
    request.auser = auser
    # The session plays no part in who this request is, so a forged cross-site request
    # cannot borrow it; and a browser never adds these headers on its own. So CSRF
    # protection, which guards the session cookie, does not apply (as in DRF, where only
    # SessionAuthentication enforces it).
    request._dont_enforce_csrf_checks = True
