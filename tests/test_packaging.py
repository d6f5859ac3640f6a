"""The project as a user gets it: a wheel installed into site-packages (not editable),
the Dockerfile's own commands run against that install, and the README's commands."""

from __future__ import annotations

import json
import os
import re
import shlex
import signal
import socket
import subprocess
import sys
from pathlib import Path

import grpc
import httpx
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from hybridserver.testing import ServerProcess
from tests.conftest import REPO

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The wheel, built from this checkout and installed into a directory of its own."""
    build = tmp_path_factory.mktemp("wheel")
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            REPO,
            "--no-deps",
            "--no-build-isolation",
            "-q",
            "-w",
            str(build),
        ],
        check=True,
        cwd=build,
    )
    (wheel,) = build.glob("hybridserver-*.whl")
    target = tmp_path_factory.mktemp("site")
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "install",
            "--no-deps",
            "--no-index",
            "-q",
            "--target",
            str(target),
            str(wheel),
        ],
        check=True,
    )
    return target


def _env(target: Path, **extra: str) -> dict[str, str]:
    env = {
        name: value
        for name, value in os.environ.items()
        if not name.startswith(("HYBRIDSERVER_", "DJANGO_"))
    }
    # The installed copy first; dependencies from this virtualenv.
    env["PYTHONPATH"] = str(target)
    env["PATH"] = (
        f"{target / 'bin'}{os.pathsep}{Path(sys.executable).parent}{os.pathsep}{env['PATH']}"
    )
    env.update(extra)
    return env


def test_wheel_holds_every_tracked_file(installed: Path) -> None:
    tracked = subprocess.run(
        ["git", "ls-files", "hybridserver", "project"],
        cwd=REPO,
        check=True,
        capture_output=True,
        text=True,
    ).stdout.split()
    assert any("migrations" in path for path in tracked)
    missing = [path for path in tracked if not (installed / path).is_file()]
    assert missing == []
    assert (installed / "bin" / "hybridserver").is_file()


def test_installed_command_runs_from_site_packages(installed: Path, tmp_path: Path) -> None:
    probe = subprocess.run(
        [
            sys.executable,
            "-c",
            "import hybridserver, project.catalog.grpc_gen.catalog.v1."
            "catalog_pb2_grpc as m; print(hybridserver.__file__); print(m.__file__)",
        ],
        env=_env(installed),
        cwd=tmp_path,
        check=True,
        capture_output=True,
        text=True,
    )
    for line in probe.stdout.splitlines():
        assert line.startswith(str(installed)), line
    help_text = subprocess.run(
        ["hybridserver", "run", "--help"],
        env=_env(installed),
        cwd=tmp_path,
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    assert "--grpc-port" in help_text


def _dockerfile() -> tuple[dict[str, str], list[str], list[str]]:
    """The last ENV line, CMD and HEALTHCHECK command of the Dockerfile."""
    text = Path(REPO, "Dockerfile").read_text()
    env_line = [line for line in text.splitlines() if line.startswith("ENV ")][-1]
    env = dict(pair.split("=", 1) for pair in shlex.split(env_line[4:]))
    cmd = json.loads(re.search(r"^CMD (\[.*\])$", text, re.M)[1])
    healthcheck = json.loads(re.search(r"^HEALTHCHECK .*? CMD (\[.*\])$", text, re.M)[1])
    return env, cmd, healthcheck


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


async def test_dockerfile_command_serves_both_protocols(installed: Path, tmp_path: Path) -> None:
    docker_env, cmd, healthcheck = _dockerfile()
    assert cmd[-1].endswith("hybridserver run project.asgi")
    http_port, grpc_port = _free_port(), _free_port()
    env = _env(
        installed,
        **{
            **docker_env,
            # Loopback here, not the container's 0.0.0.0; ports free on this machine.
            "HYBRIDSERVER_HOST": "127.0.0.1",
            "HYBRIDSERVER_PORT": str(http_port),
            "HYBRIDSERVER_GRPC_PORT": str(grpc_port),
        },
    )
    env["DATABASE_URL"] = ""  # as in the image: SQLite in the working directory
    with ServerProcess(command=cmd, app=None, env=env, cwd=str(tmp_path)) as server:
        assert (tmp_path / "db.sqlite3").is_file()
        assert server.http_address == f"127.0.0.1:{http_port}"
        health = subprocess.run(healthcheck, env=env, cwd=tmp_path, timeout=30)
        assert health.returncode == 0
        async with httpx.AsyncClient(base_url=server.http_url) as client:
            assert (await client.get("/healthz")).json() == {"status": "SERVING"}
        async with grpc.aio.insecure_channel(server.grpc_target) as channel:
            reply = await health_pb2_grpc.HealthStub(channel).Check(
                health_pb2.HealthCheckRequest(service=""), timeout=10
            )
            assert reply.status == health_pb2.HealthCheckResponse.SERVING
        server.signal(signal.SIGTERM)
        assert server.wait() == 0


def test_readme_run_command(tmp_path: Path) -> None:
    """`scripts/run-example`, as the README gives it, on free ports."""
    readme = Path(REPO, "README.md").read_text()
    assert "scripts/run-example" in readme
    env = _env(Path(REPO), DATABASE_URL=f"sqlite:///{tmp_path}/example.sqlite3")
    with ServerProcess(
        "--port",
        "0",
        "--grpc-port",
        "0",
        command=[str(Path(REPO, "scripts", "run-example"))],
        app=None,
        env=env,
        ready_timeout=180,
        cwd=REPO,
    ) as server:
        response = httpx.get(f"{server.http_url}/healthz", timeout=10)
        assert response.status_code == 200
        server.signal(signal.SIGTERM)
        assert server.wait() == 0
