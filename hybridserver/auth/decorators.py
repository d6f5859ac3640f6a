"""``@login_required`` and ``@permission_required(...)`` for Django views and servicer
methods alike.

They decorate ``async def`` and plain ``def`` views, and servicer methods of every kind:
``async def`` and ``def``, async and sync generators. Who is asking comes from
``request.auser()`` / ``request.user`` for a view and from ``context.user`` for an RPC.
The refusal is decided in one place (:func:`check_access`): anonymous is "not
authenticated" (HTTP 401 with ``WWW-Authenticate: Bearer``, gRPC UNAUTHENTICATED), a user
without a permission is "permission denied" (HTTP 403, gRPC PERMISSION_DENIED). Views get
a JSON body ``{"error": ...}``. The shape-keeping wrapper is
:func:`hybridserver._decorators.guard`, shared with the other decorators that serve both
protocols.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any, TypeVar, overload

from django.core.exceptions import ImproperlyConfigured, PermissionDenied
from django.http import JsonResponse

from hybridserver._decorators import Call, auser_of, guard, user_of
from hybridserver.auth.exceptions import PERMISSION_DENIED_MESSAGE, NotAuthenticated

F = TypeVar("F", bound=Callable[..., Any])


def check_access(user: Any, allowed: bool | None) -> None:
    """Raise ``NotAuthenticated`` or ``PermissionDenied`` unless access is granted.

    ``allowed`` is the outcome of the permission check, or None when there was none.
    """
    if user is None or not user.is_authenticated:
        raise NotAuthenticated()
    if allowed is False:
        raise PermissionDenied(PERMISSION_DENIED_MESSAGE)


def refusal_response(exc: PermissionDenied) -> JsonResponse:
    """The HTTP answer to a refusal from :func:`check_access`."""
    if isinstance(exc, NotAuthenticated):
        response = JsonResponse({"error": str(exc)}, status=401)
        response["WWW-Authenticate"] = "Bearer"
        return response
    return JsonResponse({"error": str(exc) or PERMISSION_DENIED_MESSAGE}, status=403)


_NO_MIDDLEWARE = (
    "hybridserver.auth decorators need request.user: add "
    "'django.contrib.auth.middleware.AuthenticationMiddleware' and "
    "'hybridserver.auth.AuthenticationMiddleware' to MIDDLEWARE"
)


def _verdict(call: Call, user: Any, allowed: bool | None) -> JsonResponse | None:
    """None to let the call through. A refused RPC raises (hybridserver turns it into a
    status); a refused view gets its answer."""
    try:
        check_access(user, allowed)
    except PermissionDenied as exc:
        if call.is_rpc:
            raise
        if user is None:
            raise ImproperlyConfigured(_NO_MIDDLEWARE) from None
        return refusal_response(exc)
    return None


class _Requirement:
    """Authenticated, with every permission in ``perms``."""

    def __init__(self, perms: tuple[str, ...]) -> None:
        self.perms = perms

    def _asks_perms(self, user: Any) -> bool:
        return bool(self.perms) and user is not None and user.is_authenticated

    def check(self, call: Call) -> JsonResponse | None:
        user = user_of(call)
        allowed = user.has_perms(self.perms) if self._asks_perms(user) else None
        return _verdict(call, user, allowed)

    async def acheck(self, call: Call) -> JsonResponse | None:
        user = await auser_of(call)
        allowed = await user.ahas_perms(self.perms) if self._asks_perms(user) else None
        return _verdict(call, user, allowed)


def _requires(perms: tuple[str, ...]) -> Callable[[F], F]:
    requirement = _Requirement(perms)

    def decorator(function: F) -> F:
        return guard(function, requirement.check, requirement.acheck)

    return decorator


@overload
def login_required(function: F) -> F: ...
@overload
def login_required(function: None = None) -> Callable[[F], F]: ...
def login_required(function: F | None = None) -> F | Callable[[F], F]:
    """Refuse anonymous callers: ``@login_required`` or ``@login_required()``."""
    decorator = _requires(())
    return decorator(function) if function is not None else decorator


def permission_required(perm: str | Iterable[str], *perms: str) -> Callable[[F], F]:
    """Refuse callers without every permission named, e.g.
    ``@permission_required("catalog.view_book")`` or
    ``@permission_required("catalog.add_book", "catalog.change_book")`` (an iterable as
    the first argument works too, as in Django). Anonymous callers are not authenticated.
    """
    required = (perm,) if isinstance(perm, str) else tuple(perm)
    required += perms
    if not required or not all(isinstance(name, str) and name for name in required):
        raise ValueError(f"permission_required needs permission names, got {required!r}")
    return _requires(required)
