"""A ``GRPC_INTERCEPTORS`` entry for subprocess tests: it prints a line as each RPC
starts, so that a test can wait until an RPC is in flight instead of sleeping."""

from __future__ import annotations

import sys
from collections.abc import Awaitable, Callable

import grpc


class AnnounceRpcs(grpc.aio.ServerInterceptor):
    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler:
        # One write of the whole line: print() writes the text and the newline apart,
        # and with several workers on one pipe, two lines could run together.
        sys.stdout.write(f"rpc started: {handler_call_details.method}\n")
        sys.stdout.flush()
        return await continuation(handler_call_details)
