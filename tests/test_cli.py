"""The ``hybridserver`` command and ``manage.py runhybrid``, run for real in subprocesses."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys

import grpc
import httpx
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from hybridserver.config import SETTINGS
from hybridserver.testing import READY_PATTERN, ServerProcess
from tests.conftest import REPO
from tests.processes import SCRIPT, error_lines, free_port, listening, run_command

pytestmark = pytest.mark.slow

FLAGS = [setting for setting in SETTINGS.values() if setting.flag]


def option_blocks(help_text: str) -> dict[str, str]:
    """``{"--port": "--port INTEGER HTTP port. ... [env: HYBRIDSERVER_PORT]"}``, each
    option's help unwrapped onto one line."""
    blocks: dict[str, str] = {}
    current = None
    for line in help_text.splitlines():
        if match := re.match(r"\s{2}(--[\w-]+)", line):
            current = match[1]
            blocks[current] = ""
        if current is not None:
            blocks[current] = " ".join([*blocks[current].split(), *line.split()])
    return blocks


def assert_serves(process: ServerProcess) -> None:
    """Both protocols answer on the ports of the ready line."""
    assert httpx.get(f"{process.http_url}/healthz", timeout=10).json() == {"status": "SERVING"}
    with grpc.insecure_channel(process.grpc_target) as channel:
        reply = health_pb2_grpc.HealthStub(channel).Check(
            health_pb2.HealthCheckRequest(), timeout=10
        )
    assert reply.status == health_pb2.HealthCheckResponse.SERVING


def test_help_names_the_command_and_the_precedence() -> None:
    result = subprocess.run(
        [str(SCRIPT), "--help"], capture_output=True, text=True, timeout=60, check=True
    )
    assert re.search(r"^\s+run\s", result.stdout, re.MULTILINE), result.stdout
    text = " ".join(result.stdout.split())
    assert "HYBRIDSERVER_<NAME>" in text
    assert "defaults < settings < environment < flags" in text


def test_run_help_lists_every_flag_with_its_environment_variable() -> None:
    result = run_command("run", "--help")
    assert result.returncode == 0, result.stderr
    blocks = option_blocks(result.stdout)
    for setting in FLAGS:
        block = blocks.get(setting.option)
        assert block is not None, f"{setting.option} missing from:\n{result.stdout}"
        assert f"[env: {setting.env}]" in block, block
        assert setting.help.split()[0] in block, block
    assert "--no-access-log" in blocks["--access-log"]
    for level in ("critical", "error", "warning", "info", "debug", "trace"):
        assert level in blocks["--log-level"]
    # The settings that have no flag are named too, so the help is the whole list.
    text = " ".join(result.stdout.split())
    for setting in SETTINGS.values():
        if not setting.flag:
            assert setting.name in text, setting.name
    assert "MODULE[:ATTR]" in text and "`application`" in text


def test_every_flag_takes_what_its_setting_parses() -> None:
    # Both commands build their options from these: an option typed differently from its
    # setting would refuse values the variable and the setting accept.
    for setting in FLAGS:
        if setting.type is bool:
            assert isinstance(setting.default, bool), setting.name
        elif setting.choices:
            assert setting.default in setting.choices, setting.name
        elif setting.default is not None:
            assert type(setting.default) is setting.type, setting.name


def test_runhybrid_help_lists_every_flag_with_its_environment_variable() -> None:
    result = subprocess.run(
        [sys.executable, "manage.py", "runhybrid", "--help"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    text = " ".join(result.stdout.split())
    for setting in FLAGS:
        assert setting.option in text
        assert f"[env: {setting.env}]" in text
    assert "--no-access-log" in text and "--no-reload" in text


def test_console_script_serves_module_colon_attr(server_process) -> None:
    with server_process(command=[str(SCRIPT), "run"], app="project.asgi:application") as proc:
        assert proc.loop in ("uvloop", "asyncio")
        assert_serves(proc)


def test_attribute_defaults_to_application(server_process) -> None:
    # tests.asgi_named calls its application `hybrid`.
    with listening() as port, listening() as grpc_port:
        result = run_command(
            "run", "tests.asgi_named", "--port", str(port), "--grpc-port", str(grpc_port)
        )
    assert result.returncode == 1
    assert error_lines(result.stderr) == [
        "hybridserver: error: cannot load the application 'tests.asgi_named:application': "
        'Attribute "application" not found in module "tests.asgi_named".'
    ], result.stderr
    with server_process(app="tests.asgi_named:hybrid") as proc:
        assert_serves(proc)


@pytest.mark.parametrize(
    ("app", "message"),
    [
        (
            "nope.asgi",
            "cannot load the application 'nope.asgi:application': no module named 'nope'",
        ),
        (
            "project.nope",
            "cannot load the application 'project.nope:application': "
            'Could not import module "project.nope".',
        ),
        (
            "project.asgi:nope",
            "cannot load the application 'project.asgi:nope': "
            'Attribute "nope" not found in module "project.asgi".',
        ),
        (":application", "no module in ':application': expected MODULE[:ATTR]"),
    ],
)
def test_bad_application_is_one_line_before_any_port(app: str, message: str) -> None:
    # Both ports are taken: had the command tried to bind one, it would say so instead.
    with listening() as port, listening() as grpc_port:
        result = run_command("run", app, "--port", str(port), "--grpc-port", str(grpc_port))
    assert result.returncode == 1
    (line,) = result.stderr.splitlines()
    assert line.startswith(f"hybridserver: error: {message}"), result.stderr
    assert result.stdout == ""


def test_module_that_fails_to_import_shows_the_traceback() -> None:
    # A module that exists but imports something missing is a bug in it, not a typo in
    # the command: the traceback points at it.
    result = run_command("run", "tests.asgi_broken")
    assert result.returncode == 1
    assert error_lines(result.stderr) == [
        "hybridserver: error: importing 'tests.asgi_broken' failed: "
        "ModuleNotFoundError: No module named 'no_such_dependency'"
    ], result.stderr
    assert "Traceback" in result.stderr and "tests/asgi_broken.py" in result.stderr


def test_bad_flag_value_names_the_flag() -> None:
    result = run_command("run", "project.asgi", "--port", "70000", "--grpc-port", "0")
    assert result.returncode == 1
    assert error_lines(result.stderr) == [
        "hybridserver: error: --port: expected an integer between 0 and 65535, got 70000"
    ], result.stderr

    result = run_command("run", "project.asgi", "--grpc-port", "abc")
    assert result.returncode == 2  # click's usage error
    assert "'--grpc-port'" in result.stderr and "'abc'" in result.stderr


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_manage_py_runhybrid_serves_and_stops_cleanly(server_process, sig: signal.Signals) -> None:
    # No MODULE: the ASGI_APPLICATION setting names it.
    command = [sys.executable, "manage.py", "runhybrid", "--port", "0", "--grpc-port", "0"]
    with server_process(command=command, app=None) as proc:
        assert_serves(proc)
        proc.signal(sig)
        assert proc.wait(30) == 0, proc.output
    assert "Application shutdown complete." in proc.output


def test_manage_py_runhybrid_reports_errors_like_the_command() -> None:
    result = subprocess.run(
        [sys.executable, "manage.py", "runhybrid", "nope.asgi", "--port", "0"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 1
    assert result.stderr.strip() == (
        "CommandError: cannot load the application 'nope.asgi:application': no module named 'nope'"
    )


def test_version() -> None:
    result = run_command("--version")
    assert result.returncode == 0
    assert re.fullmatch(r"hybridserver, version \d+\.\d+\.\d+\S*\n", result.stdout)


RELOAD_ASGI = """\
from django.core.asgi import get_asgi_application

print("reloadsite version {version}", flush=True)
application = get_asgi_application()
"""


def test_reload_restarts_on_python_and_proto_changes(server_process, tmp_path) -> None:
    # A tiny project in a directory of its own: the reloader watches the working directory.
    (tmp_path / "reloadsite").mkdir()
    (tmp_path / "reloadsite" / "__init__.py").write_text("")
    asgi = tmp_path / "reloadsite" / "asgi.py"
    asgi.write_text(RELOAD_ASGI.format(version="one"))
    (tmp_path / "protos").mkdir()
    proto = tmp_path / "protos" / "reload.proto"
    proto.write_text('syntax = "proto3";\npackage reload;\nmessage Ping {}\n')
    env = {
        # tests.settings (inherited) lives in the repository, not in the working directory.
        "PYTHONPATH": os.pathsep.join(filter(None, [REPO, os.environ.get("PYTHONPATH")])),
        # A stale .pyc of the same size and second would hide the edit.
        "PYTHONDONTWRITEBYTECODE": "1",
    }
    grpc_port = str(free_port())
    with server_process(
        "--reload", "--grpc-port", grpc_port, app="reloadsite.asgi", cwd=str(tmp_path), env=env
    ) as proc:
        pids = [proc.wait_for_line(READY_PATTERN)["pid"]]
        assert "Started reloader process" in proc.output
        assert_serves(proc)

        for count, (path, edit) in enumerate(
            [
                (asgi, lambda: asgi.write_text(RELOAD_ASGI.format(version="two"))),
                (proto, lambda: proto.write_text(proto.read_text() + "message Pong {}\n")),
            ],
            start=2,
        ):
            edit()
            relative = path.relative_to(tmp_path).as_posix()
            proc.wait_for_line(f"WatchFiles detected changes in '{re.escape(relative)}'")
            ready = proc.wait_for_line(READY_PATTERN, count=count)
            pids.append(ready["pid"])
            # A new server process, on the same ports, running the new code.
            assert (ready["http"], ready["grpc"]) == (proc.http_address, proc.grpc_address)
            assert_serves(proc)
        assert len(set(pids)) == 3
        assert proc.output.count("reloadsite version two") == 2, proc.output

        proc.signal(signal.SIGTERM)
        assert proc.wait(30) == 0, proc.output
    assert "Stopping reloader process" in proc.output
