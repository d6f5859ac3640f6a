"""Logging that sits in uvicorn's family.

The RPC access log is ``uvicorn.access.grpc``, a child of uvicorn's access logger: it
inherits its level, so ``--log-level`` and a ``LOGGING`` entry for ``uvicorn.access``
control HTTP and gRPC access lines together, and ``--no-access-log`` silences both.
"""

from __future__ import annotations

import copy
import logging
from typing import Any

import grpc
from uvicorn.config import LOGGING_CONFIG
from uvicorn.logging import ColourizedFormatter

ACCESS_LOGGER = "uvicorn.access.grpc"

access_logger = logging.getLogger(ACCESS_LOGGER)

_CLIENT_ERRORS = {
    grpc.StatusCode.CANCELLED,
    grpc.StatusCode.INVALID_ARGUMENT,
    grpc.StatusCode.NOT_FOUND,
    grpc.StatusCode.ALREADY_EXISTS,
    grpc.StatusCode.PERMISSION_DENIED,
    grpc.StatusCode.RESOURCE_EXHAUSTED,
    grpc.StatusCode.FAILED_PRECONDITION,
    grpc.StatusCode.ABORTED,
    grpc.StatusCode.OUT_OF_RANGE,
    grpc.StatusCode.UNAUTHENTICATED,
}


class GrpcAccessFormatter(ColourizedFormatter):
    """``INFO:     127.0.0.1:5123 - "GRPC /pkg.Service/Method" OK 1.8 ms``"""

    def formatMessage(self, record: logging.LogRecord) -> str:
        record = copy.copy(record)
        peer, method, code, duration = record.args  # type: ignore[misc]
        status = code.name
        request_line = f"GRPC {method}"
        if self.use_colors:
            request_line = self._paint(request_line, bold=True)
            if code is grpc.StatusCode.OK:
                status = self._paint(status, fg="green")
            elif code in _CLIENT_ERRORS:
                status = self._paint(status, fg="yellow")
            else:
                status = self._paint(status, fg="bright_red")
        record.__dict__.update(
            client_addr=peer,
            request_line=request_line,
            status_code=status,
            duration=f"{duration * 1000:.1f} ms",
        )
        return super().formatMessage(record)

    @staticmethod
    def _paint(text: str, **kwargs: Any) -> str:
        # Not ``_style``: logging.Formatter keeps its PercentStyle in ``self._style``.
        import click

        return click.style(text, **kwargs)


def log_config() -> dict[str, Any]:
    """uvicorn's default logging config, plus hybridserver's own loggers."""
    config = copy.deepcopy(LOGGING_CONFIG)
    config["formatters"]["grpc_access"] = {
        "()": "hybridserver.logging.GrpcAccessFormatter",
        "fmt": '%(levelprefix)s %(client_addr)s - "%(request_line)s" %(status_code)s %(duration)s',
    }
    config["handlers"]["grpc_access"] = {
        "formatter": "grpc_access",
        "class": "logging.StreamHandler",
        "stream": "ext://sys.stdout",
    }
    config["loggers"]["hybridserver"] = {
        "handlers": ["default"],
        "level": "INFO",
        "propagate": False,
    }
    config["loggers"][ACCESS_LOGGER] = {"handlers": ["grpc_access"], "propagate": False}
    return config


def format_peer(peer: str) -> str:
    """gRPC's ``ipv4:127.0.0.1:5000`` as ``127.0.0.1:5000``, like uvicorn's client address."""
    kind, _, address = peer.partition(":")
    return address if kind in ("ipv4", "ipv6") else peer
