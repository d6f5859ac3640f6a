import grpc

from tests.conftest import method


async def test_unary_both_kinds(channel):
    for name in ("Unary", "UnarySync"):
        assert await channel.unary_unary(method(name))(b"hi") == b"hi"


async def test_healthz(http):
    response = await http.get("/healthz")
    assert response.status_code == 200
    assert response.json() == {"status": "SERVING"}


async def test_internal_error_hides_text(channel):
    for name in ("Fail", "FailSync"):
        try:
            await channel.unary_unary(method(name))(b"boom")
        except grpc.aio.AioRpcError as exc:
            assert exc.code() == grpc.StatusCode.INTERNAL
            assert "secret" not in (exc.details() or "")
        else:
            raise AssertionError("no error")
