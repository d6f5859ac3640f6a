"""What a client presents to prove who it is, read the same way from HTTP headers and from
gRPC metadata, so that one set of backends serves both protocols.

A key or token travels as ``Authorization: Bearer <key>`` or ``X-API-Key: <key>``, over
HTTP as headers and over gRPC as (lowercase) metadata. Nothing else is copied, and the
repr never shows a value, so a ``Credentials`` in a traceback or a log leaks nothing.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Iterable, Mapping
from types import MappingProxyType
from typing import Any

#: The header / metadata names that carry credentials.
CREDENTIAL_HEADERS = ("authorization", "x-api-key")


def _text(value: str | bytes) -> str:
    return value.decode("latin-1") if isinstance(value, bytes) else value


@dataclasses.dataclass(frozen=True, repr=False, eq=False)
class Credentials:
    """The credential headers of one HTTP request or RPC: lowercase name -> value.

    True when it carries a token (see :attr:`token`); backends may also read
    :attr:`headers` directly.
    """

    headers: Mapping[str, str] = dataclasses.field(default_factory=lambda: MappingProxyType({}))

    @classmethod
    def from_pairs(cls, pairs: Iterable[tuple[str | bytes, str | bytes]]) -> Credentials:
        """From ``(name, value)`` pairs; names are lowercased, the first of a name wins."""
        found: dict[str, str] = {}
        for name, value in pairs:
            lowered = _text(name).lower()
            if lowered in CREDENTIAL_HEADERS and lowered not in found:
                found[lowered] = _text(value)
        return cls(MappingProxyType(found)) if found else NO_CREDENTIALS

    @classmethod
    def from_scope(cls, scope: Mapping[str, Any]) -> Credentials:
        """From an ASGI HTTP or WebSocket scope."""
        return cls.from_pairs(scope.get("headers", ()))

    @classmethod
    def from_headers(cls, headers: Mapping[str, str]) -> Credentials:
        """From a header mapping, such as ``HttpRequest.headers``, whatever its case."""
        return cls.from_pairs(headers.items())

    @classmethod
    def from_metadata(cls, metadata: Iterable[tuple[str, str | bytes]] | None) -> Credentials:
        """From gRPC invocation metadata (``context.invocation_metadata()``)."""
        return cls.from_pairs(metadata or ())

    @functools.cached_property
    def token(self) -> str | None:
        """The bearer token of ``Authorization: Bearer``, else the ``X-API-Key`` value."""
        scheme, _, token = self.headers.get("authorization", "").strip().partition(" ")
        if scheme.lower() == "bearer" and token.strip():
            return token.strip()
        return self.headers.get("x-api-key", "").strip() or None

    def __bool__(self) -> bool:
        return self.token is not None

    def __repr__(self) -> str:
        return f"<Credentials {sorted(self.headers)}>"


NO_CREDENTIALS = Credentials()
