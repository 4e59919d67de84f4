"""Ray Serve's own gRPC servers on loopback, for a cluster of one machine.

Ray Serve (2.60) binds three gRPC servers to every interface with the address written into
its code (``"[::]:0"`` for a replica's inter-deployment server, ``"[::]:<port>"`` for a
replica's direct ingress and for the fallback proxy), with no setting to change it. A local
graph is one machine, so every Ray worker of it runs :func:`bind_loopback` first (Ray's
``worker_process_setup_hook``): a server asked for every interface gets loopback instead.
HAProxy and the handles reach those servers at 127.0.0.1 already.
"""

from __future__ import annotations

from typing import Any

#: How an address that means "every interface" starts, as grpc servers are given it.
_EVERYWHERE = ("[::]:", "0.0.0.0:", ":")


def loopback_address(address: str) -> str:
    """``address`` with an every-interface host replaced by 127.0.0.1; others unchanged."""
    for prefix in _EVERYWHERE:
        if address.startswith(prefix):
            return "127.0.0.1:" + address[len(prefix) :]
    return address


def bind_loopback() -> None:
    """Makes every ``grpc.aio`` server of this process bind loopback where it asked for
    every interface (idempotent)."""
    from grpc.aio._server import Server

    if getattr(Server, "_cascade_loopback", False):
        return
    insecure, secure = Server.add_insecure_port, Server.add_secure_port

    def add_insecure_port(self: Any, address: str) -> int:
        return int(insecure(self, loopback_address(address)))

    def add_secure_port(self: Any, address: str, credentials: Any) -> int:
        return int(secure(self, loopback_address(address), credentials))

    Server.add_insecure_port = add_insecure_port
    Server.add_secure_port = add_secure_port
    Server._cascade_loopback = True
