"""Configuration: defaults < settings < environment < flags, and what a mistake looks like.

The unit tests call ``Config.resolve``; the others run the real command and observe the
effective value in the ready line or in behaviour.
"""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import time

import grpc
import httpx
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from hybridserver.config import SETTINGS, Config, ConfigError
from hybridserver.testing import ServerProcess
from tests.conftest import REPO, method
from tests.processes import (
    assert_free,
    cli_env,
    free_port,
    listening,
    port_of,
    run_command,
)

APP = "project.asgi:application"


def resolve(
    settings: dict | None = None, environ: dict | None = None, flags: dict | None = None
) -> Config:
    return Config.resolve(
        APP, user_settings=settings or {}, environ=environ or {}, flags=flags or {}
    )


# Config.resolve


def test_defaults() -> None:
    config = resolve()
    assert (config.host, config.port, config.grpc_port) == ("127.0.0.1", 8000, 50051)
    assert config.effective_grpc_host == "127.0.0.1"
    assert (config.log_level, config.access_log, config.graceful_timeout) == ("info", True, 30)


@pytest.mark.parametrize(
    ("settings", "environ", "flags", "expected"),
    [
        ({}, {}, {}, 50051),
        ({"GRPC_PORT": 1}, {}, {}, 1),
        ({"GRPC_PORT": 1}, {"HYBRIDSERVER_GRPC_PORT": "2"}, {}, 2),
        ({"GRPC_PORT": 1}, {"HYBRIDSERVER_GRPC_PORT": "2"}, {"GRPC_PORT": 3}, 3),
        ({}, {}, {"GRPC_PORT": 3}, 3),
        # An empty variable is unset, as for uvicorn's UVICORN_* variables.
        ({"GRPC_PORT": 1}, {"HYBRIDSERVER_GRPC_PORT": ""}, {}, 1),
        # A flag hides its variable, whatever the variable holds (as with click).
        ({}, {"HYBRIDSERVER_GRPC_PORT": "abc"}, {"GRPC_PORT": 3}, 3),
    ],
)
def test_precedence(settings: dict, environ: dict, flags: dict, expected: int) -> None:
    assert resolve(settings, environ, flags).grpc_port == expected


def test_environment_values_are_parsed() -> None:
    config = resolve(
        environ={
            "HYBRIDSERVER_ACCESS_LOG": "off",
            "HYBRIDSERVER_LOG_LEVEL": "WARNING",
            "HYBRIDSERVER_GRACEFUL_TIMEOUT": "2.5",
            "HYBRIDSERVER_GRPC_HOST": "::1",
        }
    )
    assert config.access_log is False
    assert config.log_level == "warning"
    assert config.graceful_timeout == 2.5
    assert config.effective_grpc_host == "::1"


# A value for every setting that has a flag: (as a string, as parsed).
SAMPLES = {
    "HOST": ("0.0.0.0", "0.0.0.0"),
    "PORT": ("8001", 8001),
    "GRPC_HOST": ("::1", "::1"),
    "GRPC_PORT": ("50052", 50052),
    "LOG_LEVEL": ("debug", "debug"),
    "ACCESS_LOG": ("false", False),
    "RELOAD": ("true", True),
    "GRACEFUL_TIMEOUT": ("2.5", 2.5),
    "TIMEOUT_KEEP_ALIVE": ("75", 75),
    "THREADS": ("8", 8),
    "LOOP_FAIRNESS": ("false", False),
    "GRPC_PACING": ("false", False),
    "COALESCE_MIDDLEWARE": ("false", False),
    "WORKERS": ("3", 3),
    "SSL_CERTFILE": (__file__, __file__),
    "SSL_KEYFILE": (__file__, __file__),
}
# Settings that are only valid together: each sample is given with its partner's.
PARTNERS = {"SSL_CERTFILE": "SSL_KEYFILE", "SSL_KEYFILE": "SSL_CERTFILE"}


def test_every_flag_is_an_environment_variable_and_a_setting() -> None:
    assert set(SAMPLES) == {name for name, setting in SETTINGS.items() if setting.flag}
    for name, (_, value) in SAMPLES.items():
        field = name.lower()
        setting = SETTINGS[name]
        names = [name, *([PARTNERS[name]] if name in PARTNERS else [])]
        environ = {SETTINGS[n].env: SAMPLES[n][0] for n in names}
        values = {n: SAMPLES[n][1] for n in names}
        assert getattr(resolve(environ=environ), field) == value, name
        assert getattr(resolve(settings=values), field) == value, name
        assert getattr(resolve(flags=values), field) == value, name
        assert getattr(resolve(), field) == setting.default, name


def test_tls_files_go_together() -> None:
    with pytest.raises(ConfigError) as raised:
        resolve(flags={"SSL_CERTFILE": __file__})
    assert str(raised.value) == "SSL_KEYFILE: SSL_CERTFILE is set, so SSL_KEYFILE must be too"
    with pytest.raises(ConfigError, match="no such file"):
        resolve(environ={"HYBRIDSERVER_SSL_KEYFILE": "/nonexistent.pem"})


def test_settings_only_knobs_are_not_read_from_the_environment() -> None:
    config = resolve({"GRPC_REFLECTION": False}, {"HYBRIDSERVER_GRPC_REFLECTION": "true"})
    assert config.grpc_reflection is False


@pytest.mark.parametrize(
    ("settings", "environ", "flags", "message"),
    [
        ({"GRPC_PORT": "abc"}, {}, {}, "HYBRIDSERVER['GRPC_PORT']: expected an integer, got 'abc'"),
        ({}, {"HYBRIDSERVER_PORT": "abc"}, {}, "HYBRIDSERVER_PORT: expected an integer, got 'abc'"),
        ({}, {}, {"PORT": 70000}, "--port: expected an integer between 0 and 65535, got 70000"),
        ({"ACCESS_LOG": "maybe"}, {}, {}, "HYBRIDSERVER['ACCESS_LOG']: expected true or false"),
        ({"GRPC_PROT": 1}, {}, {}, "HYBRIDSERVER['GRPC_PROT']: unknown setting. Did you mean"),
    ],
)
def test_errors_name_their_source(settings: dict, environ: dict, flags: dict, message: str) -> None:
    with pytest.raises(ConfigError) as raised:
        resolve(settings, environ, flags)
    assert str(raised.value).startswith(message)


# The real command: the effective value shows in the ready line or in behaviour.


@pytest.mark.slow
@pytest.mark.parametrize(
    ("settings", "environ", "flags", "host"),
    [
        ({}, {}, [], "127.0.0.1"),
        ({"GRPC_HOST": "127.0.0.2"}, {}, [], "127.0.0.2"),
        ({"GRPC_HOST": "127.0.0.2"}, {"HYBRIDSERVER_GRPC_HOST": "127.0.0.3"}, [], "127.0.0.3"),
        (
            {"GRPC_HOST": "127.0.0.2"},
            {"HYBRIDSERVER_GRPC_HOST": "127.0.0.3"},
            ["--grpc-host", "127.0.0.4"],
            "127.0.0.4",
        ),
    ],
)
def test_grpc_host_precedence(
    server_process, settings: dict, environ: dict, flags: list[str], host: str
) -> None:
    with server_process(*flags, env={**cli_env(**settings), **environ}) as proc:
        assert proc.grpc_address == f"{host}:{port_of(proc.grpc_address)}"
        assert proc.http_address.startswith("127.0.0.1:")  # HOST is not GRPC_HOST
        with grpc.insecure_channel(proc.grpc_target) as channel:
            reply = health_pb2_grpc.HealthStub(channel).Check(
                health_pb2.HealthCheckRequest(), timeout=10
            )
        assert reply.status == health_pb2.HealthCheckResponse.SERVING


def exercise(proc: ServerProcess) -> None:
    """One HTTP request, one RPC, then a graceful stop; the output is then complete."""
    http_port, grpc_port = port_of(proc.http_address), port_of(proc.grpc_address)
    with grpc.insecure_channel(f"127.0.0.1:{grpc_port}") as channel:
        # Waiting for the channel is the readiness signal when the ready line is not logged.
        grpc.channel_ready_future(channel).result(timeout=30)
        assert channel.unary_unary(method("Unary"))(b"ping", timeout=10) == b"ping"
    # The HTTP listener opens just after gRPC's: connection retries cover that moment.
    transport = httpx.HTTPTransport(retries=5)
    with httpx.Client(transport=transport, timeout=10) as client:
        assert client.get(f"http://127.0.0.1:{http_port}/healthz").status_code == 200
    proc.signal(signal.SIGTERM)
    assert proc.wait(30) == 0, proc.output


@pytest.mark.slow
@pytest.mark.parametrize(
    ("settings", "environ", "flags", "logged"),
    [
        ({}, {}, [], True),
        ({"ACCESS_LOG": False}, {}, [], False),
        ({"ACCESS_LOG": False}, {"HYBRIDSERVER_ACCESS_LOG": "true"}, [], True),
        ({}, {"HYBRIDSERVER_ACCESS_LOG": "false"}, [], False),
        ({}, {"HYBRIDSERVER_ACCESS_LOG": "true"}, ["--no-access-log"], False),
        ({"ACCESS_LOG": False}, {"HYBRIDSERVER_ACCESS_LOG": "0"}, ["--access-log"], True),
    ],
)
def test_access_log_precedence(
    server_process, settings: dict, environ: dict, flags: list[str], logged: bool
) -> None:
    with server_process(*flags, env={**cli_env(**settings), **environ}) as proc:
        exercise(proc)
    http_line = re.search(r'"GET /healthz HTTP/1\.1" 200', proc.output)
    rpc_line = re.search(r'"GRPC /hybridtest\.Echo/Unary" OK', proc.output)
    assert bool(http_line) is logged, proc.output
    assert bool(rpc_line) is logged, proc.output


@pytest.mark.slow
@pytest.mark.parametrize(
    ("settings", "environ", "flags", "info"),
    [
        ({"LOG_LEVEL": "warning"}, {}, [], False),
        ({"LOG_LEVEL": "warning"}, {"HYBRIDSERVER_LOG_LEVEL": "info"}, [], True),
        ({}, {"HYBRIDSERVER_LOG_LEVEL": "info"}, ["--log-level", "warning"], False),
    ],
)
def test_log_level_precedence(
    server_process, settings: dict, environ: dict, flags: list[str], info: bool
) -> None:
    # At warning level there is no ready line to wait for: the ports are chosen here.
    ports = ["--port", str(free_port()), "--grpc-port", str(free_port())]
    proc = server_process(*ports, *flags, env={**cli_env(**settings), **environ})
    proc.start()
    proc.http_address, proc.grpc_address = f"127.0.0.1:{ports[1]}", f"127.0.0.1:{ports[3]}"
    exercise(proc)
    info_lines = [line for line in proc.output.splitlines() if line.startswith("INFO:")]
    assert bool(info_lines) is info, proc.output
    assert ("hybridserver ready:" in proc.output) is info
    assert ('"GRPC /hybridtest.Echo/Unary" OK' in proc.output) is info


@pytest.mark.slow
@pytest.mark.parametrize(
    ("settings", "environ", "flags"),
    [
        ({"GRACEFUL_TIMEOUT": 1}, {}, []),
        ({"GRACEFUL_TIMEOUT": 30}, {"HYBRIDSERVER_GRACEFUL_TIMEOUT": "1"}, []),
        ({}, {"HYBRIDSERVER_GRACEFUL_TIMEOUT": "30"}, ["--graceful-timeout", "1"]),
    ],
)
def test_graceful_timeout_precedence(
    server_process, settings: dict, environ: dict, flags: list[str]
) -> None:
    # An RPC that sleeps 20 s is cut off after the effective timeout of 1 s; had 30 s
    # won, the process would wait for the RPC to finish.
    with server_process(*flags, env={**cli_env(**settings), **environ}) as proc:
        channel = grpc.insecure_channel(proc.grpc_target)
        stream = channel.unary_stream(method("SleepStream"))(b"20", timeout=60)
        assert next(stream) == b"start"
        started = time.monotonic()
        proc.signal(signal.SIGTERM)
        assert proc.wait(30) == 0, proc.output
        elapsed = time.monotonic() - started
        with pytest.raises(grpc.RpcError):
            next(stream)
        channel.close()
    assert elapsed < 8, f"stopped after {elapsed:.1f} s:\n{proc.output}"


@pytest.mark.slow
@pytest.mark.parametrize(
    ("settings", "environ", "flags"),
    [
        ({"TIMEOUT_KEEP_ALIVE": 1}, {}, []),
        ({"TIMEOUT_KEEP_ALIVE": 30}, {"HYBRIDSERVER_TIMEOUT_KEEP_ALIVE": "1"}, []),
        ({}, {"HYBRIDSERVER_TIMEOUT_KEEP_ALIVE": "30"}, ["--timeout-keep-alive", "1"]),
    ],
)
def test_timeout_keep_alive_precedence(
    server_process, settings: dict, environ: dict, flags: list[str]
) -> None:
    # With the effective 1 s, the server closes the idle connection well before uvicorn's
    # default of 5 s, or the 30 s that lost, would.
    with server_process(*flags, env={**cli_env(**settings), **environ}) as proc:
        host, port = proc.http_address.rsplit(":", 1)
        with socket.create_connection((host, int(port)), timeout=10) as sock:
            sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: test\r\n\r\n")
            response = sock.makefile("rb")
            status, headers = response.readline(), []
            while (line := response.readline()) not in (b"\r\n", b""):
                headers.append(line.lower())
            assert status.startswith(b"HTTP/1.1 200 "), (status, headers)
            assert b"connection: close\r\n" not in headers
            body = b'{"status": "SERVING"}'
            assert b"content-length: %d\r\n" % len(body) in headers
            assert response.read(len(body)) == body
            sock.settimeout(4)
            assert sock.recv(65536) == b"", "the idle connection was not closed"


# Mistakes: one line on stderr naming the culprit, a non-zero exit, and no port bound.


def run_with_ports_taken(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    """Run with both ports held by this test: a command that tried to bind one would
    fail on that instead of on the mistake under test."""
    with listening() as port, listening() as grpc_port:
        ports = ["--port", str(port), "--grpc-port", str(grpc_port)]
        return run_command("run", APP, *ports, *args, env=env)


@pytest.mark.slow
@pytest.mark.parametrize(
    ("settings", "message"),
    [
        (
            {"GRPC_PROT": 50052},
            "(hybridserver.E002) HYBRIDSERVER['GRPC_PROT'] is not a hybridserver setting. "
            "HINT: Did you mean 'GRPC_PORT'?",
        ),
        (
            {"GRPC_PORT": "abc"},
            "(hybridserver.E003) HYBRIDSERVER['GRPC_PORT']: expected an integer, got 'abc'",
        ),
        (
            {"GRPC_SERVICERS": ["tests.servicers.register", "tests.nope.register"]},
            "(hybridserver.E004) HYBRIDSERVER['GRPC_SERVICERS']: cannot import "
            "'tests.nope.register': No module named 'tests.nope'",
        ),
        (
            {"GRPC_INTERCEPTORS": ["tests.servicers.NoSuchInterceptor"]},
            "(hybridserver.E004) HYBRIDSERVER['GRPC_INTERCEPTORS']: cannot import "
            "'tests.servicers.NoSuchInterceptor': Module \"tests.servicers\" does not define "
            'a "NoSuchInterceptor" attribute/class',
        ),
    ],
)
def test_bad_setting(settings: dict, message: str) -> None:
    result = run_with_ports_taken(env=cli_env(**settings))
    assert result.returncode == 1
    assert result.stderr.splitlines() == [f"hybridserver: error: {message}"], result.stderr
    assert result.stdout == ""


@pytest.mark.slow
def test_several_bad_settings_are_reported_together() -> None:
    result = run_with_ports_taken(env=cli_env(GRPC_PROT=1, PORT=-1))
    assert result.returncode == 1
    lines = result.stderr.splitlines()
    assert lines[0] == "hybridserver: error: 2 configuration errors:"
    assert "HYBRIDSERVER['GRPC_PROT']" in lines[1] and "'GRPC_PORT'" in lines[1]
    assert "HYBRIDSERVER['PORT']" in lines[2] and "-1" in lines[2]
    assert len(lines) == 3


@pytest.mark.slow
@pytest.mark.parametrize(
    ("variable", "value", "message"),
    [
        ("HYBRIDSERVER_PORT", "abc", "expected an integer, got 'abc'"),
        ("HYBRIDSERVER_LOG_LEVEL", "loud", "expected one of critical, error, warning, info"),
        ("HYBRIDSERVER_ACCESS_LOG", "maybe", "expected true or false, got 'maybe'"),
        ("HYBRIDSERVER_GRACEFUL_TIMEOUT", "-1", "expected a number >= 0, got -1.0"),
    ],
)
def test_bad_environment_variable(variable: str, value: str, message: str) -> None:
    with listening() as grpc_port:
        # No --port: the variable is the HTTP port's only source in the first case.
        args = ["run", APP, "--grpc-port", str(grpc_port)]
        result = run_command(*args, env={**cli_env(), variable: value}, timeout=30)
    assert result.returncode == 1
    (line,) = result.stderr.splitlines()
    assert line.startswith(f"hybridserver: error: {variable}: {message}"), result.stderr


@pytest.mark.slow
def test_servicer_that_fails_to_register(server_process) -> None:
    http_port, grpc_port = free_port(), free_port()
    proc = server_process(
        "--port",
        str(http_port),
        "--grpc-port",
        str(grpc_port),
        env=cli_env(GRPC_SERVICERS=["tests.servicers.register", "tests.broken_servicers.register"]),
    )
    proc.start()
    returncode = proc.wait(30)
    assert returncode == 3  # uvicorn's status for a failed startup
    failures = [line for line in proc.output.splitlines() if "failed" in line]
    assert failures[0] == (
        "ERROR:    HYBRIDSERVER['GRPC_SERVICERS']: 'tests.broken_servicers.register' failed: "
        "RuntimeError: the servicer cannot start"
    ), proc.output
    assert "hybridserver ready" not in proc.output
    assert_free(http_port)
    assert_free(grpc_port)


@pytest.mark.slow
def test_manage_py_check_reports_the_same_errors() -> None:
    settings = {"GRPC_PROT": 1, "GRPC_PORT": "abc", "GRPC_SERVICERS": ["tests.nope.register"]}
    result = subprocess.run(
        [sys.executable, "manage.py", "check"],
        cwd=REPO,
        env={**os.environ, **cli_env(**settings)},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 1
    assert "?: (hybridserver.E002) HYBRIDSERVER['GRPC_PROT'] is not a hybridserver setting." in (
        result.stderr
    )
    assert "HINT: Did you mean 'GRPC_PORT'?" in result.stderr
    assert "(hybridserver.E003) HYBRIDSERVER['GRPC_PORT']: expected an integer, got 'abc'" in (
        result.stderr
    )
    assert "(hybridserver.E004) HYBRIDSERVER['GRPC_SERVICERS']: cannot import " in result.stderr
    assert "'tests.nope.register'" in result.stderr
    assert "System check identified 3 issues" in result.stderr


@pytest.mark.slow
def test_manage_py_check_passes_on_good_settings() -> None:
    result = subprocess.run(
        [sys.executable, "manage.py", "check"],
        cwd=REPO,
        env={**os.environ, **cli_env()},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    assert "no issues" in result.stdout
