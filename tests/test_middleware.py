"""Coalesced middleware (``COALESCE_MIDDLEWARE``) does what Django's own chain does.

Each case sends the same request through two Django ``ASGIHandler`` instances built from
the same ``MIDDLEWARE``: one as Django builds it, one after
:func:`hybridserver.middleware.coalesce`. Both must answer the same, and leave the same
record of hooks called, in the same order, on the same threads
(:mod:`tests.middleware_chain`). Then the example project's own stack, served by a live
hybridserver with coalescing on and with it off.
"""

from __future__ import annotations

import asyncio
import itertools
from typing import Any

import httpx
import pytest
from django.core.handlers.asgi import ASGIHandler
from django.test import override_settings

from hybridserver.middleware import MiddlewareRun, coalesce, find_django_handler
from hybridserver.testing import LiveServer
from tests import middleware_chain
from tests.middleware_chain import EVENTS, STACK, STACK_SHORT, STACK_SYNC, middleware

CASES = [
    ("ok/", ""),
    ("ok-sync/", ""),
    ("template/", ""),
    ("fail/", ""),
    ("fail/", "handle:D"),
    *[("ok/", f"stop:{name}") for name in "ABCSEF"],
    *[("ok/", f"raise:{name}") for name in "ABCSEF"],
    *[("ok/", f"deny:{name}") for name in "ABF"],
    *[("ok/", f"raise-response:{name}") for name in "ABDSF"],
    ("ok/", "replace:F"),
    ("ok/", "replace:A"),
    ("ok/", "view-stop:B"),
    ("ok/", "stop:F,raise-response:B"),
    ("ok/", "raise:E,raise-response:A"),
    ("ok/", "stop:B,replace:A"),
    ("fail/", "raise-response:F"),
    ("template/", "stop:E"),
]

_ids = itertools.count()


async def call(handler: ASGIHandler, path: str, act: str) -> tuple[Any, ...]:
    """One GET through ``handler``; its status, headers, body and the hooks' record."""
    request_id = f"r{next(_ids)}"
    headers = [(b"x-id", request_id.encode()), (b"x-act", act.encode())]
    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "GET",
        "scheme": "http",
        "path": "/" + path,
        "raw_path": ("/" + path).encode(),
        "query_string": b"",
        "root_path": "",
        "headers": [(b"host", b"testserver"), *headers],
        "client": ("127.0.0.1", 1234),
        "server": ("testserver", 80),
    }
    sent: list[dict[str, Any]] = []
    bodies = [{"type": "http.request", "body": b"", "more_body": False}]
    disconnected = asyncio.Event()

    async def receive() -> dict[str, Any]:
        if bodies:
            return bodies.pop()
        await disconnected.wait()
        return {"type": "http.disconnect"}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    await asyncio.wait_for(handler(scope, receive, send), 10)
    disconnected.set()
    start = next(m for m in sent if m["type"] == "http.response.start")
    body = b"".join(m.get("body", b"") for m in sent if m["type"] == "http.response.body")
    names = {k.decode().lower(): v.decode() for k, v in start["headers"]}
    keep = {k: names[k] for k in ("x-trail", "content-type") if k in names}
    events = EVENTS.pop(request_id)
    return start["status"], keep, body, [name for name, _ in events], _threads(events)


def _threads(events: list[tuple[str, int]]) -> list[str]:
    """Which thread each event ran on, named by order of first appearance, so that two
    runs compare: ``["t0", "t0", "t1", ...]``."""
    names: dict[int, str] = {}
    return [names.setdefault(thread, f"t{len(names)}") for _, thread in events]


#: (stack, thread hops saved): A-B saves two, C-D-E-F three, C-D alone none.
STACKS = [(STACK, 5), (STACK_SHORT, 2), (STACK_SYNC, 2)]
_handlers: dict[str, tuple[ASGIHandler, ASGIHandler]] = {}


def handlers(stack: str) -> tuple[ASGIHandler, ASGIHandler]:
    """Django's handler for ``stack`` and a coalesced one, made once."""
    if stack not in _handlers:
        with override_settings(MIDDLEWARE=middleware(stack)):
            stock, merged = ASGIHandler(), ASGIHandler()
        coalesce(merged)
        _handlers[stack] = stock, merged
    return _handlers[stack]


@pytest.mark.parametrize(("stack", "saved"), STACKS)
def test_runs_are_merged_once(stack: str, saved: str) -> None:
    with override_settings(MIDDLEWARE=middleware(stack)):
        stock, merged = ASGIHandler(), ASGIHandler()
    assert coalesce(merged) == saved
    assert not isinstance(stock._middleware_chain, MiddlewareRun)
    assert isinstance(merged._middleware_chain, MiddlewareRun)
    assert [type(m).__name__ for m in merged._middleware_chain.members] == ["A", "B"]
    assert coalesce(merged) == 0
    assert isinstance(merged._middleware_chain, MiddlewareRun)


def _cases() -> list[Any]:
    return [
        pytest.param(stack, path, act, id=f"{stack}-{path}{act}")
        for stack, _ in STACKS
        for path, act in CASES
        if all(a.split(":")[1] in stack for a in act.split(",") if a)
    ]


@pytest.mark.parametrize(("stack", "path", "act"), _cases())
async def test_same_as_djangos_chain(stack: str, path: str, act: str) -> None:
    stock, merged = handlers(stack)
    with override_settings(ROOT_URLCONF=middleware_chain.__name__):
        expected = await call(stock, path, act)
        got = await call(merged, path, act)
    assert got == expected
    # The cases do what they say: every hook named in X-Act ran.
    status, _, _, events, _ = got
    for a in filter(None, act.split(",")):
        what, name = a.split(":")
        hook = {"view-stop": "view", "handle": "exception"}.get(what, "request")
        if what in ("raise-response", "replace"):
            hook = "response"
        assert f"{name}.{hook}" in events, (a, events)
    assert status != 200 or events.count("view") == 1


async def test_example_project_answers_the_same() -> None:
    """The example's stack, live: the same answers with coalescing on and off."""
    requests = [
        ("GET", "/api/books/", {}),
        ("GET", "/api/books/", {"X-API-Key": "hs_not-a-key"}),
        ("GET", "/admin/", {}),
        ("GET", "/admin/login/", {}),
        ("POST", "/admin/login/", {}),
        ("GET", "/no/such/page", {}),
        ("GET", "/api/books", {}),
    ]
    answers = []
    for app, coalesced in (("project.asgi", True), ("tests.asgi_stock", False)):
        async with LiveServer(app, coalesce_middleware=coalesced) as live:
            handler = find_django_handler(live.app.app)
            assert handler is not None
            chain = handler._middleware_chain
            assert isinstance(chain, MiddlewareRun) == coalesced
            if coalesced:
                names = [type(m).__name__ for m in chain.members]
                assert names == [
                    "SecurityMiddleware",
                    "SessionMiddleware",
                    "CommonMiddleware",
                    "CsrfViewMiddleware",
                    "AuthenticationMiddleware",
                    "MessageMiddleware",
                    "XFrameOptionsMiddleware",
                ]
            got = []
            async with httpx.AsyncClient(base_url=live.http_url) as client:
                for method, path, headers in requests:
                    response = await client.request(method, path, headers=headers)
                    header_names = sorted(set(response.headers) - {"date", "set-cookie"})
                    body = response.content
                    if response.headers.get("content-type", "").startswith("text/html"):
                        body = b""  # CSRF tokens differ
                    got.append((response.status_code, header_names, body))
            answers.append(got)
    assert answers[0] == answers[1]
    assert [status for status, _, _ in answers[0]] == [401, 401, 302, 200, 403, 404, 301]
