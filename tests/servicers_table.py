"""Servicers for tests/test_method_table.py: one method added both as a registered method
and by a generic handler, and many registered methods."""

from __future__ import annotations

from typing import Any

import grpc

METHODS = 150


async def registered(request: bytes, context: Any) -> bytes:
    return b"registered " + request


async def generic(request: bytes, context: Any) -> bytes:
    return b"generic " + request


def register(server: Any) -> None:
    server.add_generic_rpc_handlers(
        (
            grpc.method_handlers_generic_handler(
                "table.Table", {"Both": grpc.unary_unary_rpc_method_handler(generic)}
            ),
        )
    )
    server.add_registered_method_handlers(
        "table.Table",
        {
            "Both": grpc.unary_unary_rpc_method_handler(registered),
            **{f"M{i}": grpc.unary_unary_rpc_method_handler(registered) for i in range(METHODS)},
        },
    )
