"""Authentication backends: ``async def authenticate(credentials) -> user | None``.

Listed in ``HYBRIDSERVER["AUTH_BACKENDS"]`` and tried in order by
:func:`hybridserver.auth.core.authenticate`, for HTTP requests and RPCs alike. A backend
returns None for anything it does not accept, whatever the reason: a wrong, malformed,
expired or revoked key is the same as no key.
"""

from __future__ import annotations

import abc
import hmac
import logging
from typing import Any

from django.contrib.auth import get_user_model
from django.utils import timezone
from django.utils.crypto import constant_time_compare

from hybridserver.auth.credentials import Credentials
from hybridserver.auth.keys import hash_key, key_prefix
from hybridserver.auth.models import APIKey
from hybridserver.auth.tokens import password_digest, read_token
from hybridserver.conf import hybrid_setting

# Only prefixes are ever logged: they are not secrets (the admin shows them).
logger = logging.getLogger("hybridserver.auth")


class BaseBackend(abc.ABC):
    """What ``AUTH_BACKENDS`` entries implement. Instantiated once, shared by all requests."""

    @abc.abstractmethod
    async def authenticate(self, credentials: Credentials) -> Any | None:
        """The user these credentials prove, or None for anything not accepted."""


class APIKeyBackend(BaseBackend):
    """API keys (:class:`~hybridserver.auth.models.APIKey`): one indexed query per request,
    no cache, so a revoked key is refused on the very next request."""

    async def authenticate(self, credentials: Credentials) -> Any | None:
        key = credentials.token
        prefix = key_prefix(key) if key else None
        if key is None or prefix is None:
            return None
        api_key = await APIKey.objects.select_related("user").filter(prefix=prefix).afirst()
        # The prefix is looked up in clear; the secret is only ever compared as a hash, in
        # constant time.
        if api_key is None or not hmac.compare_digest(api_key.hashed_key, hash_key(key)):
            logger.debug("API key %s…: no such key", prefix)
            return None
        now = timezone.now()
        if not api_key.is_usable(now):
            logger.debug("API key %s…: revoked or expired", prefix)
            return None
        if not getattr(api_key.user, "is_active", True):
            return None
        await api_key.atouch(now)
        return api_key.user


class SignedTokenBackend(BaseBackend):
    """Tokens from :func:`hybridserver.auth.tokens.make_token`, valid for
    ``HYBRIDSERVER["AUTH_TOKEN_MAX_AGE"]`` seconds."""

    async def authenticate(self, credentials: Credentials) -> Any | None:
        token = credentials.token
        # API keys contain no ':'; signed values always do.
        if token is None or ":" not in token:
            return None
        payload = read_token(token, hybrid_setting("AUTH_TOKEN_MAX_AGE"))
        if payload is None:
            return None
        pk, digest = payload
        User = get_user_model()
        try:
            user = await User._default_manager.aget(pk=pk)
        except (User.DoesNotExist, ValueError, TypeError):
            return None
        if not constant_time_compare(password_digest(user), digest):
            return None
        return user
