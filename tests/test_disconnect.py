"""Django's ASGI handler without its per-request reference cycle
(:mod:`hybridserver.disconnect`): no garbage left for the cyclic collector, and a client
that leaves still cancels the view."""

from __future__ import annotations

import asyncio
import gc
from collections.abc import Callable, Iterator
from urllib.parse import urlsplit

import django
import httpx
import pytest
from django.core.exceptions import RequestAborted
from django.core.handlers.asgi import ASGIHandler
from django.test import override_settings

from hybridserver.disconnect import quiet_disconnects
from hybridserver.middleware import find_django_handler
from hybridserver.testing import LiveServer
from tests import urls


@pytest.fixture
def garbage() -> Iterator[Callable[[], list[object]]]:
    """A function that returns what the cyclic garbage collector has found since the
    test began."""
    gc.collect()
    gc.set_debug(gc.DEBUG_SAVEALL)

    def collect() -> list[object]:
        gc.collect()
        return list(gc.garbage)

    try:
        yield collect
    finally:
        gc.set_debug(0)
        gc.garbage.clear()


async def test_requests_leave_no_cycle_through_the_disconnect_listener(garbage) -> None:
    async with (
        LiveServer("project.asgi") as live,
        httpx.AsyncClient(base_url=live.http_url, timeout=30) as http,
    ):
        for _ in range(20):
            response = await http.get("/api/books/")
            assert response.status_code in (200, 401)
        found = garbage()
    aborted = [item for item in found if isinstance(item, RequestAborted)]
    tasks = [item for item in found if isinstance(item, asyncio.Task)]
    assert aborted == [] and tasks == []


async def test_a_client_that_leaves_still_cancels_the_view() -> None:
    urls.WAITING.update(started=asyncio.Event(), cancelled=asyncio.Event())
    with override_settings(ROOT_URLCONF="tests.urls"):
        async with LiveServer("project.asgi") as live:
            handler = find_django_handler(live.app.app)
            assert handler is not None and "listen_for_disconnect" in vars(handler)
            address = urlsplit(live.http_url)
            _, writer = await asyncio.open_connection(address.hostname, address.port)
            writer.write(b"GET /until-cancelled/ HTTP/1.1\r\nHost: localhost\r\n\r\n")
            await writer.drain()
            await asyncio.wait_for(urls.WAITING["started"].wait(), 10)
            writer.close()
            await writer.wait_closed()
            await asyncio.wait_for(urls.WAITING["cancelled"].wait(), 10)


def test_only_djangos_own_handler_in_a_known_release(monkeypatch) -> None:
    class Custom(ASGIHandler):
        async def listen_for_disconnect(self, receive):
            return await super().listen_for_disconnect(receive)

    assert quiet_disconnects(Custom()) is False
    assert quiet_disconnects(object()) is False

    handler = ASGIHandler()
    monkeypatch.setattr(django, "VERSION", (6, 1, 0, "final", 0))
    assert quiet_disconnects(handler) is False
    monkeypatch.undo()
    assert quiet_disconnects(handler) is True
    assert quiet_disconnects(handler) is False  # once


async def test_the_listener_returns_on_disconnect_and_keeps_djangos_assertion() -> None:
    handler = ASGIHandler()
    assert quiet_disconnects(handler)

    async def disconnect() -> dict[str, str]:
        return {"type": "http.disconnect"}

    async def more_body() -> dict[str, str]:
        return {"type": "http.request"}

    assert await handler.listen_for_disconnect(disconnect) is None
    with pytest.raises(AssertionError, match="Invalid ASGI message"):
        await handler.listen_for_disconnect(more_body)
