"""HTTP admission control (``hybridserver.fairness``): no limit while the loop is idle,
first come first served once there is one, and slow requests stop counting."""

from __future__ import annotations

import asyncio

import pytest

from hybridserver import fairness
from hybridserver.fairness import HttpAdmission


@pytest.fixture(autouse=True)
def no_probe(monkeypatch: pytest.MonkeyPatch) -> None:
    """The tests adjust the limit themselves: keep the loop probe out of the way."""
    monkeypatch.setattr(fairness, "PERIOD", 3600.0)


async def test_an_idle_loop_lets_every_request_in() -> None:
    admission = HttpAdmission()
    tickets = [await admission.enter() for _ in range(50)]
    assert admission.in_flight == 50
    assert admission.waiting == 0
    for ticket in tickets:
        admission.leave(ticket)
    assert admission.in_flight == 0


async def test_long_iterations_cut_the_limit_and_requests_wait_in_order() -> None:
    admission = HttpAdmission()
    first = await admission.enter()
    second = await admission.enter()
    admission._adjust(iteration=10 * fairness.TARGET_HIGH)
    assert admission.limit == fairness.MIN_LIMIT

    order: list[str] = []

    async def request(name: str) -> None:
        ticket = await admission.enter()
        order.append(name)
        admission.leave(ticket)

    waiting = [asyncio.create_task(request(name)) for name in ("a", "b", "c")]
    await asyncio.sleep(0)
    assert admission.waiting == 3 and order == []
    admission.leave(first)
    await asyncio.sleep(0)
    assert order == []  # still one in flight, the limit is one
    admission.leave(second)
    await asyncio.gather(*waiting)
    assert order == ["a", "b", "c"]
    assert admission.in_flight == 0


async def test_short_iterations_raise_the_limit_while_requests_wait() -> None:
    admission = HttpAdmission()
    admission.limit = 1
    ticket = await admission.enter()
    waiter = asyncio.create_task(admission.enter())
    await asyncio.sleep(0)
    admission._adjust(iteration=fairness.TARGET_LOW / 2)
    assert admission.limit == 2
    admission.leave(await waiter)
    admission.leave(ticket)


async def test_a_cancelled_waiter_gives_up_its_place() -> None:
    admission = HttpAdmission()
    admission.limit = 1
    ticket = await admission.enter()
    waiter = asyncio.create_task(admission.enter())
    await asyncio.sleep(0)
    waiter.cancel()
    await asyncio.gather(waiter, return_exceptions=True)
    admission.leave(ticket)
    assert admission.in_flight == 0
    admission.leave(await admission.enter())
    assert admission.in_flight == 0


async def test_a_slow_request_stops_counting(monkeypatch: pytest.MonkeyPatch) -> None:
    admission = HttpAdmission()
    admission.limit = 1
    slow = await admission.enter()
    waiter = asyncio.create_task(admission.enter())
    await asyncio.sleep(0)
    assert not waiter.done()
    monkeypatch.setattr(fairness, "EXPIRY", 0.0)
    admission._expire()
    admitted = await asyncio.wait_for(waiter, 1)
    admission.leave(slow)  # finishing late does not count twice
    assert admission.in_flight == 1
    admission.leave(admitted)
    assert admission.in_flight == 0
