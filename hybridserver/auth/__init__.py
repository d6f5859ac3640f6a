"""One async authentication layer for REST and gRPC.

- :class:`Credentials` — what a request or RPC presents, read from HTTP headers or gRPC
  metadata alike;
- :func:`authenticate` — credentials to a Django user through
  ``HYBRIDSERVER["AUTH_BACKENDS"]``, the same function for both protocols;
- :class:`AuthenticationMiddleware` — sets ``request.user`` / ``request.auser()``;
  RPCs get ``context.user`` from hybridserver's handler wrapper;
- :func:`login_required`, :func:`permission_required` — for views and servicer methods;
- :class:`~hybridserver.auth.models.APIKey` and :func:`make_token` — the credentials
  hybridserver ships.

Names are imported on first use, so that importing this package does not need Django's
app registry to be ready.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from hybridserver.auth.core import authenticate
    from hybridserver.auth.credentials import Credentials
    from hybridserver.auth.decorators import login_required, permission_required
    from hybridserver.auth.exceptions import NotAuthenticated
    from hybridserver.auth.middleware import AuthenticationMiddleware
    from hybridserver.auth.tokens import make_token

_EXPORTS = {
    "AuthenticationMiddleware": "hybridserver.auth.middleware",
    "Credentials": "hybridserver.auth.credentials",
    "NotAuthenticated": "hybridserver.auth.exceptions",
    "authenticate": "hybridserver.auth.core",
    "login_required": "hybridserver.auth.decorators",
    "make_token": "hybridserver.auth.tokens",
    "permission_required": "hybridserver.auth.decorators",
}

__all__ = [
    "AuthenticationMiddleware",
    "Credentials",
    "NotAuthenticated",
    "authenticate",
    "login_required",
    "make_token",
    "permission_required",
]


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(_EXPORTS[name]), name)
