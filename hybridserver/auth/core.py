"""The one function that turns credentials into a Django user, for HTTP and gRPC alike."""

from __future__ import annotations

from typing import Any

from django.core.exceptions import PermissionDenied

from hybridserver.auth.credentials import Credentials
from hybridserver.conf import hybrid_setting

_backends: tuple[Any, tuple[Any, ...]] = (None, ())


def get_backends() -> tuple[Any, ...]:
    """Instances of ``HYBRIDSERVER["AUTH_BACKENDS"]``, made once per value of the setting."""
    global _backends
    classes = hybrid_setting("AUTH_BACKENDS")
    if _backends[0] is not classes:
        _backends = (classes, tuple(backend() for backend in classes))
    return _backends[1]


async def authenticate(credentials: Credentials) -> Any:
    """The active user the credentials prove, else an ``AnonymousUser``.

    Without a token this is free: no backend runs, no query, no thread. A backend that
    raises ``PermissionDenied`` stops the search, as in ``django.contrib.auth``.
    """
    if credentials:
        for backend in get_backends():
            try:
                user = await backend.authenticate(credentials)
            except PermissionDenied:
                break
            if user is not None and getattr(user, "is_active", True):
                return user
    return anonymous_user()


def anonymous_user() -> Any:
    """A new ``AnonymousUser``: what every request without credentials gets, on both
    protocols. (Imported on first use: this module loads before Django's apps.)"""
    global _AnonymousUser
    if _AnonymousUser is None:
        from django.contrib.auth.models import AnonymousUser

        _AnonymousUser = AnonymousUser
    return _AnonymousUser()


_AnonymousUser: Any = None
