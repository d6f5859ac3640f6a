"""Django exceptions as gRPC status codes, the way Django turns them into HTTP statuses."""

from __future__ import annotations

import grpc
from django.core.exceptions import (
    BadRequest,
    ObjectDoesNotExist,
    PermissionDenied,
    SuspiciousOperation,
    ValidationError,
)
from django.http import Http404

from hybridserver.auth.exceptions import NotAuthenticated

INTERNAL_MESSAGE = "Internal server error"
UNDECODABLE_MESSAGE = "The request message could not be parsed."


class UndecodableRequest(BadRequest):
    """A request message that its deserializer could not parse: the client's fault, so
    INVALID_ARGUMENT, where grpc itself would answer UNKNOWN with the parser's
    exception in the details."""

    def __init__(self) -> None:
        super().__init__(UNDECODABLE_MESSAGE)


def _validation_message(exc: ValidationError) -> str:
    if hasattr(exc, "error_dict"):
        return "; ".join(
            f"{field}: {' '.join(messages)}" if field != "__all__" else " ".join(messages)
            for field, messages in exc.message_dict.items()
        )
    return " ".join(exc.messages)


def status_for(exc: BaseException) -> tuple[grpc.StatusCode, str] | None:
    """The status a client should see for ``exc``, or None for an unexpected error.

    Messages are those Django itself would show a client: the text of a 404 or a
    validation error, never the text of an unexpected exception.
    """
    if isinstance(exc, ObjectDoesNotExist | Http404):
        return grpc.StatusCode.NOT_FOUND, str(exc) or "Not found."
    if isinstance(exc, NotAuthenticated):
        return grpc.StatusCode.UNAUTHENTICATED, str(exc)
    if isinstance(exc, PermissionDenied):
        return grpc.StatusCode.PERMISSION_DENIED, str(exc) or "Permission denied."
    if isinstance(exc, ValidationError):
        return grpc.StatusCode.INVALID_ARGUMENT, _validation_message(exc)
    if isinstance(exc, UndecodableRequest):
        return grpc.StatusCode.INVALID_ARGUMENT, UNDECODABLE_MESSAGE
    if isinstance(exc, SuspiciousOperation | BadRequest):
        # Django answers 400 and keeps the reason in its log: so do we.
        return grpc.StatusCode.INVALID_ARGUMENT, "Bad request."
    if isinstance(exc, NotImplementedError):
        return grpc.StatusCode.UNIMPLEMENTED, "Method not implemented."
    return None
