"""The API key format: ``hs_<prefix>_<secret>``.

``hs_k3x9a0qz_Jq1v...`` (55 characters): ``hs_`` marks the string as a hybridserver key
(so secret scanners and people can recognise one), the 8 characters after it are a
random, non-secret lookup prefix stored in clear, and the last 43 are 32 random bytes.
The database keeps the prefix and the SHA-256 of the whole key, never the key: a key has
256 bits of entropy, so a fast hash cannot be brute-forced and a slow password hasher
would only cost time on every request.
"""

from __future__ import annotations

import hashlib
import re
import secrets
import string

TAG = "hs_"
PREFIX_LENGTH = len(TAG) + 8
_PREFIX_ALPHABET = string.ascii_lowercase + string.digits
_KEY = re.compile(r"hs_[a-z0-9]{8}_[A-Za-z0-9_-]{43}")


def generate_key() -> tuple[str, str]:
    """A new random key, and its prefix."""
    prefix = TAG + "".join(secrets.choice(_PREFIX_ALPHABET) for _ in range(8))
    return f"{prefix}_{secrets.token_urlsafe(32)}", prefix


def hash_key(key: str) -> str:
    """What the database stores for ``key``: the hex SHA-256 of the whole key."""
    return hashlib.sha256(key.encode()).hexdigest()


def key_prefix(key: str) -> str | None:
    """The lookup prefix of a well-formed key, or None for anything else."""
    if len(key) != 55 or _KEY.fullmatch(key) is None:
        return None
    return key[:PREFIX_LENGTH]
