"""Run a container of a rendered pod on this machine the way a kubelet would.

There is no container runtime here, but what breaks a first install is rarely the image: it is
the pod's shape. So each container runs with exactly the command, args and environment the
manifest gives (plus the image's own ``ENV``, as the Dockerfile sets it), as the pod's user,
in a private mount namespace where

- the root filesystem is read-only (``readOnlyRootFilesystem: true``),
- every ``emptyDir`` is a fresh writable tmpfs at its mount path,
- every ``configMap`` volume is its keys as files, read-only,
- a ``persistentVolumeClaim`` (the model repository) is a host folder, read-only where the
  claim or the mount says so,
- the service-account token is at ``/var/run/secrets/kubernetes.io/serviceaccount`` with
  ``KUBERNETES_SERVICE_HOST``/``_PORT`` set, as the kubelet injects them,
- Services the pod calls resolve through ``/etc/hosts`` to the pods behind them, and with a
  network namespace (:mod:`tests.e2e.podnet`) the pod has an address and ports of its own.

Mount points the host lacks are created before the root turns read-only and removed after.
"""

from __future__ import annotations

import contextlib
import os
import shlex
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any, Self

SA_DIR = "/var/run/secrets/kubernetes.io/serviceaccount"
#: The user the Dockerfile creates (``useradd --uid 10001 ... cascade``).
IMAGE_USER = "cascade:x:10001:10001::/tmp:/usr/sbin/nologin\n"
VENV = Path(sys.executable).parent.parent
#: This checkout (the virtualenv's editable install imports from it).
PROJECT = Path(__file__).resolve().parents[2]


def image_env() -> dict[str, str]:
    """The image's ``ENV`` (Dockerfile's runtime stage), for this machine's virtualenv."""
    site = VENV / "lib" / "python3.11" / "site-packages"
    libdir = subprocess.run(
        [sys.executable, "-c", "import sysconfig; print(sysconfig.get_config_var('LIBDIR'))"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    return {
        "PATH": f"{VENV / 'bin'}:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
        "LD_LIBRARY_PATH": f"{site / 'nvidia_pytriton.libs'}:{libdir}",
        "RAY_USAGE_STATS_ENABLED": "0",
        "PYTHONUNBUFFERED": "1",
        "PYTHONDONTWRITEBYTECODE": "1",
        "HOME": "/tmp",
    }


@dataclass
class PodVolumes:
    """What the cluster would provide for the pod's volumes."""

    config_maps: Mapping[str, Mapping[str, str]] = field(default_factory=dict)
    claims: Mapping[str, Path] = field(default_factory=dict)
    service_account: Mapping[str, str] | None = None  # token, ca.crt, namespace
    api_server: tuple[str, int] | None = None
    hosts: Mapping[str, str] = field(default_factory=dict)  # Service name -> pod address


class PodProcess:
    """One container of ``pod_spec`` running as the pod would; a context manager."""

    def __init__(
        self,
        pod_spec: Mapping[str, Any],
        container: str,
        volumes: PodVolumes,
        workdir: Path,
        *,
        init: bool = False,
        netns: str | None = None,
    ) -> None:
        key = "initContainers" if init else "containers"
        found = [c for c in pod_spec.get(key) or [] if c["name"] == container]
        if not found:
            raise KeyError(f"no {key[:-1]} {container!r} in the pod spec")
        self.container: Mapping[str, Any] = found[0]
        self.pod_spec, self.volumes, self.workdir = pod_spec, volumes, workdir
        self.netns = netns
        self.log = workdir / f"{container}.log"
        self.pod_name = f"{container}-{os.getpid()}-{id(self) % 10_000:04d}"
        self.process: subprocess.Popen[bytes] | None = None
        self._created: list[Path] = []

    # ---- the pod's shape -----------------------------------------------------------------

    def argv(self) -> list[str]:
        """The container's command and args, exactly as the manifest has them."""
        return [*self.container.get("command", []), *self.container.get("args", [])]

    def environment(self) -> dict[str, str]:
        env = image_env()
        for item in self.container.get("env") or []:
            if "value" in item:
                env[item["name"]] = str(item["value"])
            elif (item.get("valueFrom") or {}).get("fieldRef", {}).get("fieldPath") == (
                "metadata.name"
            ):
                env[item["name"]] = self.pod_name
            else:
                raise NotImplementedError(f"env {item['name']!r}: {item}")
        if self.volumes.api_server is not None:
            host, port = self.volumes.api_server
            env["KUBERNETES_SERVICE_HOST"], env["KUBERNETES_SERVICE_PORT"] = host, str(port)
        return env

    def user(self) -> tuple[int, int]:
        pod = self.pod_spec.get("securityContext") or {}
        own = self.container.get("securityContext") or {}
        uid = int(own.get("runAsUser", pod.get("runAsUser", 0)))
        gid = int(own.get("runAsGroup", pod.get("runAsGroup", uid)))
        return uid, gid

    def _mounts(self) -> list[tuple[str, str]]:
        """(shell lines to prepare, mount path) per volume mount, in the manifest's order."""
        volumes = {v["name"]: v for v in self.pod_spec.get("volumes") or []}
        lines: list[tuple[str, str]] = []
        for mount in self.container.get("volumeMounts") or []:
            path, volume = mount["mountPath"], volumes[mount["name"]]
            read_only = bool(mount.get("readOnly"))
            if "emptyDir" in volume:
                lines.append((f"mount -t tmpfs -o mode=1777 tmpfs {shlex.quote(path)}", path))
            elif "configMap" in volume:
                name = volume["configMap"]["name"]
                source = self.workdir / "configmaps" / name
                source.mkdir(parents=True, exist_ok=True)
                for key, text in self.volumes.config_maps[name].items():
                    (source / key).write_text(text)
                lines.append((_bind(source, path, read_only=True), path))
            elif "persistentVolumeClaim" in volume:
                claim = volume["persistentVolumeClaim"]
                source = self.volumes.claims[claim["claimName"]]
                ro = read_only or bool(claim.get("readOnly"))
                lines.append((_bind(source, path, read_only=ro), path))
            else:
                raise NotImplementedError(f"volume {volume['name']!r}: {sorted(volume)}")
        if self.volumes.service_account is not None and self.pod_spec.get(
            "automountServiceAccountToken", True
        ):
            source = self.workdir / "serviceaccount"
            source.mkdir(parents=True, exist_ok=True)
            for key, text in self.volumes.service_account.items():
                (source / key).write_text(text)
            lines.append((_bind(source, SA_DIR, read_only=True), SA_DIR))
        return lines

    def _script(self) -> str:
        mounts = self._mounts()
        for _, path in mounts:
            self._mkdir(Path(path))
        hosts = self.workdir / "hosts"
        lines = ["127.0.0.1 localhost", "::1 localhost"]
        lines += [f"{address} {name}" for name, address in sorted(self.volumes.hosts.items())]
        hosts.write_text("\n".join(lines) + "\n")
        uid, gid = self.user()
        read_only_root = (self.container.get("securityContext") or {}).get(
            "readOnlyRootFilesystem", False
        )
        env = " ".join(shlex.quote(f"{k}={v}") for k, v in sorted(self.environment().items()))
        cwd = self.container.get("workingDir", "/tmp")
        passwd = self.workdir / "passwd"
        passwd.write_text(Path("/etc/passwd").read_text() + IMAGE_USER)
        lines = [
            "set -e",
            _bind(hosts, "/etc/hosts", read_only=True),
            _bind(passwd, "/etc/passwd", read_only=True),
            *self._python_visible(),
        ]
        staged = self._stage_hidden([Path(path) for line, path in mounts if "tmpfs" in line])
        lines += [stage for stage, _ in staged]
        if read_only_root:
            lines.append("mount -o remount,bind,ro /")
        # Parents before children, as a runtime mounts them (a tmpfs at /tmp after a file bound
        # under /tmp would hide it).
        lines += [line for line, _ in sorted(mounts, key=lambda m: Path(m[1]).parts)]
        lines += [restore for _, restore in staged]
        lines.append(f"cd {shlex.quote(cwd)}")
        lines.append(
            f"exec setpriv --reuid={uid} --regid={gid} --clear-groups "
            f"env -i {env} {shlex.join(self.argv())}"
        )
        return "\n".join(lines) + "\n"

    def _python_visible(self) -> list[str]:
        """Lines that make the interpreter readable by the pod's user, as in the image.

        The image's Python lives in world-readable /usr/local; here it may sit under a home
        folder only root may enter (/root/.pyenv): a 0755 tmpfs replaces that folder in the
        pod's mount namespace, with the interpreter bound back into it.
        """
        base = Path(sys.base_prefix).resolve()
        blocked = next(
            (p for p in reversed(base.parents) if p != Path("/") and not p.stat().st_mode & 0o001),
            None,
        )
        if blocked is None:
            return []
        stage = self.workdir / "image-python"
        stage.mkdir(exist_ok=True)
        return [
            f"mount --bind {shlex.quote(str(base))} {shlex.quote(str(stage))}",
            f"mount -t tmpfs -o mode=755 tmpfs {shlex.quote(str(blocked))}",
            f"mkdir -p {shlex.quote(str(base))}",
            f"mount --bind {shlex.quote(str(stage))} {shlex.quote(str(base))}",
        ]

    def _stage_hidden(self, tmpfs_paths: list[Path]) -> list[tuple[str, str]]:
        """(before, after) lines that keep this checkout and its virtualenv visible when a
        pod's emptyDir (a tmpfs at /tmp) would cover them: in the image they live elsewhere,
        here they may sit under /tmp. Bound to a stage first, bound back over the tmpfs."""
        needed = sorted({PROJECT.resolve(), VENV.resolve()}, key=lambda p: len(p.parts))
        keep: list[Path] = []
        for path in needed:
            if any(path.is_relative_to(k) for k in keep):
                continue
            if any(path.is_relative_to(t) for t in tmpfs_paths):
                keep.append(path)
        out = []
        for number, path in enumerate(keep):
            stage = self.workdir / f"stage-{number}"
            stage.mkdir(exist_ok=True)
            where, there = shlex.quote(str(path)), shlex.quote(str(stage))
            out.append(
                (
                    f"mount --bind {where} {there}",
                    f"mkdir -p {where} && mount --bind {there} {where}",
                )
            )
        return out

    def _mkdir(self, path: Path) -> None:
        missing = [p for p in (path, *path.parents) if not p.exists()]
        for p in reversed(missing):
            p.mkdir()
            self._created.append(p)

    # ---- lifecycle -----------------------------------------------------------------------

    def start(self) -> None:
        self.workdir.mkdir(parents=True, exist_ok=True)
        script = self.workdir / f"{self.container['name']}.sh"
        script.write_text(self._script())
        argv = ["unshare", "--mount", "--propagation", "private", "sh", str(script)]
        if self.netns is not None:  # the pod's own network namespace (see podnet.py)
            argv = ["ip", "netns", "exec", self.netns, *argv]
        with self.log.open("ab") as out:
            self.process = subprocess.Popen(
                argv,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )

    def stop(self, timeout: float = 20) -> None:
        proc = self.process
        if proc is not None and proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
        for p in reversed(self._created):
            with contextlib.suppress(OSError):
                p.rmdir()
        self._created.clear()

    def run(self, timeout: float) -> int:
        """Start, wait for exit (an init container), and return the exit code."""
        self.start()
        assert self.process is not None
        try:
            return self.process.wait(timeout=timeout)
        finally:
            self.stop()

    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def tail(self, lines: int = 60) -> str:
        if not self.log.exists():
            return ""
        return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])

    def wait_until(self, probe: Any, timeout: float, what: str) -> Any:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not self.alive():
                code = self.process.returncode if self.process else None
                raise AssertionError(f"{what}: the container exited ({code}):\n{self.tail()}")
            try:
                found = probe()
            except OSError:
                found = None
            if found:
                return found
            time.sleep(0.5)
        raise AssertionError(f"timed out waiting for {what}:\n{self.tail()}")

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


def _bind(source: Path | str, target: str, *, read_only: bool) -> str:
    line = f"mount --bind {shlex.quote(str(source))} {shlex.quote(target)}"
    if read_only:
        line += f" && mount -o remount,bind,ro {shlex.quote(target)}"
    return line


def temp_workdir(prefix: str) -> Path:
    """A folder for a pod's files outside /tmp (pods mount their own /tmp over it)."""
    return Path(tempfile.mkdtemp(prefix=prefix, dir="/var/tmp"))
