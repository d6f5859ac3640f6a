"""Signed bearer tokens: short-lived, stateless alternatives to API keys.

A token is ``django.core.signing`` output over the user's primary key and a digest of
their password hash, signed with ``SECRET_KEY`` and timestamped. It is accepted by
:class:`~hybridserver.auth.backends.SignedTokenBackend` until
``HYBRIDSERVER["AUTH_TOKEN_MAX_AGE"]`` seconds have passed, the user changes their
password, or the user is deactivated. It cannot be revoked one by one: use API keys for
that.
"""

from __future__ import annotations

from typing import Any

from django.core import signing

SALT = "hybridserver.auth.tokens"


def password_digest(user: Any) -> str:
    """What a token carries of the user's password: a prefix of the session hash (an
    HMAC of the password hash), which ends every token when the password changes, as it
    ends every session."""
    return user.get_session_auth_hash()[:16]


def token_payload(user: Any) -> list[Any]:
    return [user.pk, password_digest(user)]


def make_token(user: Any) -> str:
    """A signed bearer token for ``user``."""
    return signing.TimestampSigner(salt=SALT).sign_object(token_payload(user))


def read_token(token: str, max_age: int) -> tuple[Any, str] | None:
    """``(user pk, password digest)`` of a valid, unexpired token, else None."""
    try:
        payload = signing.TimestampSigner(salt=SALT).unsign_object(token, max_age=max_age)
    except (signing.BadSignature, ValueError, UnicodeDecodeError):
        return None
    if not isinstance(payload, list) or len(payload) != 2 or not isinstance(payload[1], str):
        return None
    return payload[0], payload[1]
