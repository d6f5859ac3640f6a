"""TLS for both servers, by flags and by settings, with a certificate the test makes."""

from __future__ import annotations

import ssl
from pathlib import Path

import grpc
import httpx
import pytest
import trustme
from grpc_health.v1 import health_pb2, health_pb2_grpc

from hybridserver.testing import ServerExited
from tests.processes import cli_env

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def ca() -> trustme.CA:
    return trustme.CA()


@pytest.fixture
def certificate(ca: trustme.CA, tmp_path: Path) -> tuple[str, str]:
    cert = ca.issue_cert("localhost", "127.0.0.1")
    certfile, keyfile = tmp_path / "cert.pem", tmp_path / "key.pem"
    cert.cert_chain_pems[0].write_to_path(certfile)
    cert.private_key_pem.write_to_path(keyfile)
    return str(certfile), str(keyfile)


async def _check_both_protocols(server, ca: trustme.CA) -> None:
    assert server.http_url.startswith("https://")
    context = ssl.create_default_context()
    ca.configure_trust(context)
    async with httpx.AsyncClient(base_url=server.http_url, verify=context) as client:
        assert (await client.get("/healthz")).json() == {"status": "SERVING"}
    plain_http = server.http_url.replace("https://", "http://")
    async with httpx.AsyncClient(base_url=plain_http) as client:
        with pytest.raises(httpx.HTTPError):
            await client.get("/healthz")

    credentials = grpc.ssl_channel_credentials(root_certificates=ca.cert_pem.bytes())
    async with grpc.aio.secure_channel(server.grpc_target, credentials) as channel:
        reply = await health_pb2_grpc.HealthStub(channel).Check(
            health_pb2.HealthCheckRequest(), timeout=10
        )
        assert reply.status == health_pb2.HealthCheckResponse.SERVING
    async with grpc.aio.insecure_channel(server.grpc_target) as channel:
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await health_pb2_grpc.HealthStub(channel).Check(
                health_pb2.HealthCheckRequest(), timeout=5
            )
        assert refused.value.code() == grpc.StatusCode.UNAVAILABLE


async def test_tls_by_flags(server_process, ca, certificate) -> None:
    certfile, keyfile = certificate
    with server_process("--ssl-certfile", certfile, "--ssl-keyfile", keyfile) as server:
        await _check_both_protocols(server, ca)


async def test_tls_by_settings(server_process, ca, certificate) -> None:
    certfile, keyfile = certificate
    env = cli_env(SSL_CERTFILE=certfile, SSL_KEYFILE=keyfile)
    with server_process(env=env) as server:
        await _check_both_protocols(server, ca)


def test_a_certificate_without_its_key_is_refused(server_process, certificate) -> None:
    certfile, _ = certificate
    with pytest.raises(ServerExited) as exited, server_process("--ssl-certfile", certfile):
        pass
    assert exited.value.returncode != 0
    assert "SSL_KEYFILE" in exited.value.output


def test_a_key_that_does_not_match_is_refused(server_process, ca, certificate, tmp_path) -> None:
    certfile, _ = certificate
    other_key = tmp_path / "other.pem"
    ca.issue_cert("localhost").private_key_pem.write_to_path(other_key)
    with (
        pytest.raises(ServerExited) as exited,
        server_process("--ssl-certfile", certfile, "--ssl-keyfile", str(other_key)),
    ):
        pass
    assert exited.value.returncode != 0
    assert "cannot use SSL_CERTFILE" in exited.value.output
    assert "Traceback" not in exited.value.output
