from __future__ import annotations

from typing import Any

from django_socio_grpc.services.app_handler_registry import AppHandlerRegistry

from bench.peers.socio_bench.services import BenchService


def grpc_handlers(server: Any) -> None:
    AppHandlerRegistry("socio_bench", server).register(BenchService)
