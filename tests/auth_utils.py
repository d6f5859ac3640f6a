"""Users and API keys for the auth tests, made in the shared test database."""

from __future__ import annotations

import datetime
import uuid
from collections.abc import Iterable
from typing import Any

from asgiref.sync import sync_to_async
from django.contrib.auth import get_user_model
from django.contrib.auth.models import Permission
from django.utils import timezone

from hybridserver.auth.models import APIKey

TIMEOUT = 10


def make_user(perms: Iterable[str] = (), *, superuser: bool = False, active: bool = True) -> Any:
    """A new user with ``perms`` (``app_label.codename``)."""
    User = get_user_model()
    username = f"user-{uuid.uuid4().hex[:12]}"
    if superuser:
        user = User.objects.create_superuser(username, password="pw-" + username)
    else:
        user = User.objects.create_user(username, password="pw-" + username)
    for perm in perms:
        app_label, codename = perm.split(".")
        user.user_permissions.add(
            Permission.objects.get(content_type__app_label=app_label, codename=codename)
        )
    if not active:
        user.is_active = False
        user.save(update_fields=["is_active"])
    return user


def make_key(
    perms: Iterable[str] = (),
    *,
    superuser: bool = False,
    active: bool = True,
    expires_in: datetime.timedelta | None = None,
    revoked: bool = False,
    name: str = "test",
) -> tuple[Any, APIKey, str]:
    """A new user (see :func:`make_user`) and an API key of theirs: (user, APIKey, key)."""
    user = make_user(perms, superuser=superuser, active=active)
    expires_at = timezone.now() + expires_in if expires_in is not None else None
    api_key, key = APIKey.objects.create_key(user, name, expires_at=expires_at)
    if revoked:
        api_key.revoke()
    return user, api_key, key


amake_user = sync_to_async(make_user)
amake_key = sync_to_async(make_key)


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}
