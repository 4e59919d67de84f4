"""A pod network on this machine: one network namespace per pod, joined by a bridge.

Pods have addresses of their own, so the graph and Triton both listen on port 8000 as their
manifests say, and the graph reaches Triton by its Service name (``/etc/hosts`` in the pod maps
it to the Triton pod's address). Everything stays inside namespaces this test run creates; the
bridge has no route anywhere else.
"""

from __future__ import annotations

import contextlib
import ipaddress
import os
import subprocess
from types import TracebackType
from typing import Self


def _ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True, capture_output=True, text=True)


class PodNetwork:
    def __init__(self, subnet: str = "10.244.0.0/24") -> None:
        self.network = ipaddress.ip_network(subnet)
        hosts = self.network.hosts()
        self.gateway = str(next(hosts))
        self._free = hosts
        tag = os.getpid() % 100_000
        self.bridge = f"cbr{tag}"
        self._tag = tag
        self._namespaces: list[str] = []
        self._veths: list[str] = []

    def __enter__(self) -> Self:
        _ip("link", "add", self.bridge, "type", "bridge")
        _ip("addr", "add", f"{self.gateway}/{self.network.prefixlen}", "dev", self.bridge)
        _ip("link", "set", self.bridge, "up")
        return self

    def add(self) -> tuple[str, str]:
        """A new pod network namespace: (its name, its address)."""
        n = len(self._namespaces)
        ns, host, peer = f"cascade-e2e-{self._tag}-{n}", f"cv{self._tag}h{n}", f"cv{self._tag}p{n}"
        address = str(next(self._free))
        _ip("netns", "add", ns)
        self._namespaces.append(ns)
        _ip("link", "add", host, "type", "veth", "peer", "name", peer)
        self._veths.append(host)
        _ip("link", "set", peer, "netns", ns)
        _ip("link", "set", host, "master", self.bridge)
        _ip("link", "set", host, "up")
        _ip("-n", ns, "link", "set", "lo", "up")
        _ip("-n", ns, "link", "set", peer, "name", "eth0")
        _ip("-n", ns, "addr", "add", f"{address}/{self.network.prefixlen}", "dev", "eth0")
        _ip("-n", ns, "link", "set", "eth0", "up")
        return ns, address

    def close(self) -> None:
        for ns in self._namespaces:
            with contextlib.suppress(subprocess.CalledProcessError):
                _ip("netns", "del", ns)
        for veth in self._veths:
            with contextlib.suppress(subprocess.CalledProcessError):
                _ip("link", "del", veth)
        with contextlib.suppress(subprocess.CalledProcessError):
            _ip("link", "del", self.bridge)
        self._namespaces.clear()
        self._veths.clear()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()
