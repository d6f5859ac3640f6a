"""Helpers for tests that run the real ``hybridserver`` command in a subprocess."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from hybridserver.testing import ServerProcess
from tests.conftest import REPO

#: The console script that ``pip install`` made, next to this interpreter.
SCRIPT = Path(sys.executable).with_name("hybridserver")


def cli_env(**hybridserver: Any) -> dict[str, str]:
    """Environment for ``tests.settings_cli``, with these ``HYBRIDSERVER`` keys on top."""
    return {
        "DJANGO_SETTINGS_MODULE": "tests.settings_cli",
        "TEST_HYBRIDSERVER": json.dumps(hybridserver),
    }


def run_command(
    *args: str, env: dict[str, str] | None = None, timeout: float = 60
) -> subprocess.CompletedProcess[str]:
    """``python -m hybridserver ARGS`` to completion, stdout and stderr apart."""
    return subprocess.run(
        [sys.executable, "-m", "hybridserver", *args],
        cwd=REPO,
        env={**os.environ, **(env or {})},
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def error_lines(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if line.startswith("hybridserver: error:")]


@contextlib.contextmanager
def listening() -> Iterator[int]:
    """A port on 127.0.0.1 held by a listening socket of this process."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        yield sock.getsockname()[1]


def free_port() -> int:
    """A port nobody listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def assert_free(port: int) -> None:
    """Nothing holds ``port``: binding it without SO_REUSEADDR works."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", port))


def port_of(address: str) -> int:
    return int(address.rpartition(":")[2])


async def wait_for_line(
    process: ServerProcess, pattern: str | re.Pattern[str], timeout: float = 30, count: int = 1
) -> re.Match[str]:
    """``process.wait_for_line`` without blocking the test's event loop."""
    return await asyncio.to_thread(process.wait_for_line, pattern, timeout, count=count)


async def wait_for_exit(process: ServerProcess, timeout: float = 60) -> int:
    return await asyncio.to_thread(process.wait, timeout)
