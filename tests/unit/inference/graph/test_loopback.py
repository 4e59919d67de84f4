"""Every-interface gRPC addresses become loopback; a real grpc.aio server binds there."""

from __future__ import annotations

import asyncio
import ipaddress

import grpc
import psutil  # type: ignore[import-untyped]
import pytest

from inference.graph.loopback import bind_loopback, loopback_address


@pytest.mark.parametrize(
    ("asked", "bound"),
    [
        ("[::]:0", "127.0.0.1:0"),
        ("[::]:40000", "127.0.0.1:40000"),
        ("0.0.0.0:9500", "127.0.0.1:9500"),
        (":9500", "127.0.0.1:9500"),
        ("127.0.0.1:9500", "127.0.0.1:9500"),
        ("10.0.0.7:9500", "10.0.0.7:9500"),  # a chosen interface is kept
    ],
)
def test_loopback_address(asked: str, bound: str) -> None:
    assert loopback_address(asked) == bound


@pytest.fixture
def patched_grpc(monkeypatch: pytest.MonkeyPatch) -> None:
    """bind_loopback for this test only: the rest of the session keeps grpc as it was."""
    from grpc.aio._server import Server

    for name in ("add_insecure_port", "add_secure_port"):
        monkeypatch.setattr(Server, name, getattr(Server, name))
    monkeypatch.setattr(Server, "_cascade_loopback", False, raising=False)


def test_a_grpc_aio_server_asked_for_every_interface_listens_on_loopback(
    patched_grpc: None,
) -> None:
    bind_loopback()
    bind_loopback()  # a second call changes nothing

    async def listen() -> list[str]:
        server = grpc.aio.server()
        port = server.add_insecure_port("[::]:0")
        await server.start()
        try:
            return [
                c.laddr.ip
                for c in psutil.Process().net_connections(kind="inet")
                if c.status == psutil.CONN_LISTEN and c.laddr.port == port
            ]
        finally:
            await server.stop(None)

    addresses = [ipaddress.ip_address(ip) for ip in asyncio.run(listen())]
    assert addresses
    assert all(_loopback(a) for a in addresses), addresses


def _loopback(address: ipaddress.IPv4Address | ipaddress.IPv6Address) -> bool:
    mapped = getattr(address, "ipv4_mapped", None)  # ::ffff:127.0.0.1, a dual-stack socket
    return address.is_loopback or (mapped is not None and mapped.is_loopback)
