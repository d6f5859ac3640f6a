"""A ``GRPC_SERVICERS`` entry that imports fine but fails when called."""

from __future__ import annotations

from typing import Any


def register(server: Any) -> None:
    raise RuntimeError("the servicer cannot start")
