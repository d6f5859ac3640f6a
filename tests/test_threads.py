"""The pool's threads run under SCHED_BATCH, so that a thread woken for a sync call does
not preempt the event loop (:func:`hybridserver.threads._yield_on_wake`); the loop's own
thread, and a policy the operator chose, are left alone."""

from __future__ import annotations

import os
import sys
import threading

import httpx
import pytest

from hybridserver.threads import ThreadPool
from tests.processes import cli_env

pytestmark = [
    pytest.mark.skipif(
        not sys.platform.startswith("linux"), reason="scheduling policies are Linux's"
    ),
    # Threads inherit their creator's policy: under `chrt` these tests would see its.
    pytest.mark.skipif(
        sys.platform.startswith("linux") and os.sched_getscheduler(0) != os.SCHED_OTHER,
        reason="the tests run under a scheduling policy other than the default",
    ),
]


def policy_of_a_new_pool() -> int:
    """The scheduling policy of the thread a new pool, started from the calling thread,
    runs a lease's calls on."""
    pool = ThreadPool(1)
    lease = pool.request_context().lease
    try:
        return lease.submit(os.sched_getscheduler, 0).result(timeout=10)
    finally:
        lease.release()
        pool.shutdown(timeout=10)


def test_pool_threads_yield_on_wake() -> None:
    assert policy_of_a_new_pool() == os.SCHED_BATCH
    # The thread that submitted, like the event loop's, keeps the default policy.
    assert os.sched_getscheduler(0) == os.SCHED_OTHER


def test_a_chosen_policy_is_kept() -> None:
    # As under `chrt --idle 0 hybridserver run ...`: threads inherit the policy of the
    # thread that starts them, here one running under SCHED_IDLE.
    seen: list[int | BaseException] = []

    def under_sched_idle() -> None:
        try:
            os.sched_setscheduler(0, os.SCHED_IDLE, os.sched_param(0))
            seen.append(policy_of_a_new_pool())
        except BaseException as exc:
            seen.append(exc)

    thread = threading.Thread(target=under_sched_idle)
    thread.start()
    thread.join(30)
    assert seen == [os.SCHED_IDLE]


def thread_policies(pid: int) -> dict[int, int]:
    """Each thread of ``pid`` and its scheduling policy (field 41 of its ``stat``)."""
    policies = {}
    for tid in os.listdir(f"/proc/{pid}/task"):
        try:
            with open(f"/proc/{pid}/task/{tid}/stat") as stat:
                fields = stat.read().rsplit(")", 1)[1].split()
        except FileNotFoundError:  # the thread ended meanwhile
            continue
        policies[int(tid)] = int(fields[41 - 3])
    return policies


def test_a_served_sync_view_runs_on_a_batch_thread(server_process) -> None:
    with server_process(env=cli_env()) as proc:
        response = httpx.get(f"{proc.http_url}/slow-sync/?s=0", timeout=10)
        assert response.status_code == 200, response.text
        pid = proc.process.pid
        policies = thread_policies(pid)
        # The main thread runs the event loop: default policy.
        assert policies.pop(pid) == os.SCHED_OTHER
        # The view ran on a pool thread.
        assert os.SCHED_BATCH in policies.values(), policies
