"""Why a request is refused: not authenticated (401 / UNAUTHENTICATED), decided here,
versus authenticated without permission (Django's ``PermissionDenied``: 403 /
PERMISSION_DENIED)."""

from __future__ import annotations

from django.core.exceptions import PermissionDenied


class NotAuthenticated(PermissionDenied):
    """No valid credentials. A ``PermissionDenied``, so code unaware of it still refuses."""

    default_message = "Authentication credentials were not provided or are not valid."

    def __init__(self, message: str | None = None) -> None:
        super().__init__(message or self.default_message)


PERMISSION_DENIED_MESSAGE = "You do not have permission to perform this action."
