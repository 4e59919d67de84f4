"""Launcher for the real tritonserver bundled in the nvidia-pytriton wheel.

It owns everything a local Triton needs and nothing is left to the user's shell: the
environment the binary needs (the wheel's ``nvidia_pytriton.libs`` and the interpreter's
LIBDIR on ``LD_LIBRARY_PATH``, this interpreter's ``bin`` first on ``PATH`` so the python
backend's stub runs in an environment with numpy < 2 and onnxruntime), a backend directory
with the stub for this Python version, a runtime repository (see :mod:`inference.triton.shim`),
free ports, explicit model control, readiness polling with a timeout, a captured log, and a
clean shutdown that also removes the python backend's shared-memory regions.

It binds to loopback unless told otherwise: a local run stays private, while in a pod the
Service and the kubelet's probes connect from outside, so ``cascade triton --host 0.0.0.0``.
The canonical repository is only read (in a pod it is a read-only volume); the runtime
repository, backends and log go to a temporary directory unless ``workdir`` names one.
"""

from __future__ import annotations

import contextlib
import ctypes
import importlib.util
import json
import logging
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import sysconfig
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType

from contract.repository import RepositoryReader
from inference.errors import InferenceError, Unavailable
from inference.processes import parent_and_start
from inference.triton.shim import build_runtime_repository, sync_model

log = logging.getLogger("cascade.inference")

SHM_DIR = Path("/dev/shm")
#: Where a local server listens unless told otherwise.
LOOPBACK = "127.0.0.1"
_WILDCARDS = {"0.0.0.0": LOOPBACK, "": LOOPBACK, "::": "::1"}


def _pytriton_root() -> Path:
    spec = importlib.util.find_spec("pytriton")  # located, not imported: importing is slow
    if spec is None or spec.origin is None:
        raise InferenceError("nvidia-pytriton is not installed; it carries the local tritonserver")
    return Path(spec.origin).resolve().parent / "tritonserver"


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((LOOPBACK, 0))
        port: int = s.getsockname()[1]
        return port


def client_address(host: str) -> str:
    """Where a client on this machine reaches a server bound to ``host`` (as a URL's host):
    a wildcard bind is reached over loopback, an IPv6 literal goes in brackets."""
    address = _WILDCARDS.get(host, host)
    return f"[{address}]" if ":" in address else address


def tritonserver_args(
    *,
    runtime_repository: Path,
    backend_directory: Path,
    host: str,
    http_port: int,
    grpc_port: int,
    metrics_port: int,
    models: Sequence[str],
    shm_prefix: str,
    extra_args: Sequence[str] = (),
) -> list[str]:
    """tritonserver's arguments (without the binary): a pure function of the settings.

    HTTP, gRPC and metrics all bind to ``host``: Triton's metrics would otherwise follow
    ``--http-address``, and saying so keeps the three from drifting apart.
    """
    return [
        f"--model-repository={runtime_repository}",
        f"--backend-directory={backend_directory}",
        f"--http-port={http_port}",
        f"--grpc-port={grpc_port}",
        f"--metrics-port={metrics_port}",
        f"--http-address={host}",
        f"--grpc-address={host}",
        f"--metrics-address={host}",
        "--model-control-mode=explicit",
        *(f"--load-model={name}" for name in models),
        "--exit-on-error=false",
        # Ready = the server is up, even if a model failed to load: one corrupt model
        # must not take the others down. Per-model state is checked after start.
        "--strict-readiness=false",
        "--log-verbose=0",
        # Stop within seconds even while clients (a graph's channels) stay connected.
        "--exit-timeout-secs=5",
        f"--backend-config=python,shm-region-prefix-name={shm_prefix}",
        *extra_args,
    ]


def server_environment(base: dict[str, str] | None = None) -> dict[str, str]:
    """The environment tritonserver needs: its libraries, and this interpreter for the stub."""
    env = dict(os.environ if base is None else base)
    root = _pytriton_root()
    libs = root.parent.parent / "nvidia_pytriton.libs"
    libdir = sysconfig.get_config_var("LIBDIR") or ""
    paths = [str(libs), libdir, env.get("LD_LIBRARY_PATH", "")]
    env["LD_LIBRARY_PATH"] = ":".join(p for p in paths if p)
    env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")])
    return env


def backend_directory(target: Path) -> Path:
    """A backend dir whose python backend has the stub built for this Python version."""
    root = _pytriton_root()
    version = f"{sys.version_info.major}.{sys.version_info.minor}"
    stub = root / "python_backend_stubs" / version / "triton_python_backend_stub"
    if not stub.exists():
        raise InferenceError(f"nvidia-pytriton has no python backend stub for Python {version}")
    python = target / "python"
    python.mkdir(parents=True, exist_ok=True)
    for source in (
        root / "backends" / "python" / "libtriton_python.so",
        root / "backends" / "python" / "triton_python_backend_utils.py",
        stub,
    ):
        link = python / source.name
        if not link.exists():
            link.symlink_to(source)
    return target


@dataclass
class TritonServer:
    """One local tritonserver serving (a runtime twin of) a canonical model repository.

    Use as a context manager, or call :meth:`start` and :meth:`stop`. ``models`` are loaded
    at start (explicit model control: nothing else is loaded behind your back).
    """

    repository: Path
    models: Sequence[str] | None = None
    startup_timeout_s: float = 60.0
    workdir: Path | None = None
    extra_args: Sequence[str] = ()
    http_port: int = 0
    grpc_port: int = 0
    metrics_port: int = 0
    #: The address HTTP, gRPC and metrics bind to: loopback for a local run, ``0.0.0.0`` in
    #: a pod (its Service and the kubelet's probes connect from outside the container).
    host: str = LOOPBACK
    #: False serves every model without Triton's dynamic batcher (for measuring it).
    dynamic_batching: bool = True
    process: subprocess.Popen[bytes] | None = field(default=None, init=False)
    #: Names this server's python-backend shared-memory regions (by default Triton names them
    #: by random UUIDs, so a killed server's could never be found). Derived from the run's
    #: directory name unless given, so a leftover directory says which regions were its own.
    shm_prefix: str = ""
    log_path: Path = field(default=Path(), init=False)
    _tmp: Path | None = field(default=None, init=False)

    @property
    def http_url(self) -> str:
        return f"{client_address(self.host)}:{self.http_port}"

    @property
    def grpc_url(self) -> str:
        return f"{client_address(self.host)}:{self.grpc_port}"

    @property
    def metrics_url(self) -> str:
        return f"http://{client_address(self.host)}:{self.metrics_port}/metrics"

    @property
    def runtime_repository(self) -> Path:
        return self._workdir / "repository"

    @property
    def _workdir(self) -> Path:
        if self.workdir is not None:
            return self.workdir
        if self._tmp is None:
            reap_leftovers()
            self._tmp = Path(tempfile.mkdtemp(prefix=RUN_PREFIX))
        return self._tmp

    def command(self) -> list[str]:
        models = self.models or RepositoryReader(self.repository).models()
        return [
            str(_pytriton_root() / "bin" / "tritonserver"),
            *tritonserver_args(
                runtime_repository=self.runtime_repository,
                backend_directory=backend_directory(self._workdir / "backends"),
                host=self.host,
                http_port=self.http_port,
                grpc_port=self.grpc_port,
                metrics_port=self.metrics_port,
                models=models,
                shm_prefix=self.shm_prefix,
                extra_args=self.extra_args,
            ),
        ]

    def start(self) -> TritonServer:
        if self.process is not None:
            raise InferenceError("this server is already started")
        self._workdir.mkdir(parents=True, exist_ok=True)
        if not self.shm_prefix:
            self.shm_prefix = shm_prefix_for(self._workdir)
        build_runtime_repository(
            self.repository, self.runtime_repository, self.models, batching=self.dynamic_batching
        )
        for name in ("http_port", "grpc_port", "metrics_port"):
            if not getattr(self, name):
                setattr(self, name, free_port())
        self.log_path = self._workdir / "tritonserver.log"
        try:
            self._launch()
        except BaseException:
            self.stop()
            raise
        for name, (state, reason) in self.model_states().items():
            if state != "READY":
                log.error("%s failed to load (%s): %s", name, state, reason)
        return self

    def restart(self) -> None:
        """Start the process again after it exited, on the same ports and runtime repository
        (clients reconnect to the same address); what the dead one left is removed first."""
        self._clear_dead()
        self._launch()

    def _launch(self) -> None:
        command = self.command()
        log.info(
            "starting tritonserver on %s (HTTP %d, gRPC %d, metrics %d; log: %s)",
            self.host,
            self.http_port,
            self.grpc_port,
            self.metrics_port,
            self.log_path,
        )
        with self.log_path.open("ab") as sink:
            self.process = subprocess.Popen(
                command,
                stdout=sink,
                stderr=subprocess.STDOUT,
                env=server_environment(),
                start_new_session=True,  # Ctrl-C in the terminal reaches us, not it
                preexec_fn=die_with_parent,
            )
        write_owner(self._workdir, self.process.pid, self.shm_prefix)
        try:
            self.wait_ready(self.startup_timeout_s)
        except BaseException:
            self._clear_dead()
            raise

    def exited(self) -> int | None:
        """The exit status once the process has ended, else None."""
        return None if self.process is None else self.process.poll()

    def _clear_dead(self) -> None:
        """Kill what is left of the process group (the python backend's stubs outlive a
        killed server for a while) and remove its shared-memory regions."""
        process, self.process = self.process, None
        if process is not None:
            _kill_group(process.pid)
            process.wait()
        remove_shared_memory(self.shm_prefix)

    def model_states(self) -> dict[str, tuple[str, str]]:
        """``name/version`` -> (state, reason) from Triton's repository index."""
        request = urllib.request.Request(
            f"http://{self.http_url}/v2/repository/index", data=b"{}", method="POST"
        )
        with urllib.request.urlopen(request, timeout=5) as response:
            rows = json.loads(response.read())
        return {
            f"{row['name']}/{row.get('version', '')}": (
                row.get("state", "UNKNOWN"),
                row.get("reason", ""),
            )
            for row in rows
        }

    def wait_ready(self, timeout_s: float) -> None:
        """Poll ``/v2/health/ready`` until it answers 200; fail with the log's tail."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.process is not None and self.process.poll() is not None:
                raise Unavailable(
                    f"tritonserver exited with status {self.process.returncode}: {self.log_tail()}"
                )
            if self.ready():
                return
            time.sleep(0.1)
        raise Unavailable(f"tritonserver not ready after {timeout_s:.0f}s: {self.log_tail()}")

    def ready(self) -> bool:
        try:
            url = f"http://{self.http_url}/v2/health/ready"
            with urllib.request.urlopen(url, timeout=1.0) as response:
                return bool(response.status == 200)
        except (urllib.error.URLError, OSError):
            return False

    def model_counters(self, model: str, names: Sequence[str]) -> dict[str, float]:
        """Triton's own Prometheus counters for ``model``, summed over its versions.

        E.g. ``nv_inference_count`` against ``nv_inference_exec_count``: fewer executions than
        inferences is dynamic batching at work.
        """
        with urllib.request.urlopen(self.metrics_url, timeout=5) as response:
            text = response.read().decode()
        out = {}
        for name in names:
            pattern = rf'^{name}{{[^}}]*model="{model}"[^}}]*}} ([0-9.e+]+)$'
            out[name] = sum(float(v) for v in re.findall(pattern, text, flags=re.MULTILINE))
        return out

    def log_tail(self, lines: int = 15) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return "(no log)"
        return "\n".join(text.splitlines()[-lines:])

    def sync(self, model: str) -> list[int]:
        """Mirror a model's canonical versions into the runtime repository (before a load)."""
        return sync_model(
            RepositoryReader(self.repository),
            self.runtime_repository,
            model,
            batching=self.dynamic_batching,
        )

    def stop(self, timeout_s: float = 30.0) -> None:
        """SIGINT (Triton drains in-flight requests), SIGKILL after the timeout, then clean."""
        process, self.process = self.process, None
        if process is not None and process.poll() is None:
            process.send_signal(signal.SIGINT)
            try:
                process.wait(timeout=timeout_s)
            except subprocess.TimeoutExpired:
                log.warning("tritonserver did not stop in %.0fs; killing it", timeout_s)
                _kill_group(process.pid)
                process.wait()
        if process is not None:
            _kill_group(process.pid)  # stubs a crashed server left behind
            remove_shared_memory(self.shm_prefix)
        if self._tmp is not None:
            shutil.rmtree(self._tmp, ignore_errors=True)
            self._tmp = None
        elif self.workdir is not None:
            (self.workdir / OWNER_FILE).unlink(missing_ok=True)

    def __enter__(self) -> TritonServer:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


def remove_shared_memory(prefix: str) -> list[Path]:
    """Remove the python backend's shm regions named with ``prefix`` (a killed server leaks
    them; a clean stop leaves none)."""
    if not prefix:
        return []  # never "every region"
    removed = []
    for region in SHM_DIR.glob(f"{prefix}*"):
        try:
            region.unlink()
            removed.append(region)
        except OSError:
            continue
    return removed


# --------------------------------------------------------------------------------------------
# A run's leftovers: named so the next start finds them
# --------------------------------------------------------------------------------------------

#: A local run's directory under the temporary directory; its shm regions share its suffix.
RUN_PREFIX = "cascade-triton-"
#: Who started the run (pid and start time, so a reused pid is not mistaken for it).
OWNER_FILE = "owner.json"
_PR_SET_PDEATHSIG = 1


def shm_prefix_for(workdir: Path) -> str:
    """The shm region prefix of the run in ``workdir`` (a pure function of its name)."""
    suffix = re.sub(r"[^A-Za-z0-9]", "", workdir.name.removeprefix(RUN_PREFIX))[:24]
    return f"cascade_{suffix or 'triton'}_"


def die_with_parent() -> None:
    """In the child before exec: the kernel sends it SIGKILL when its parent dies, so a
    killed ``cascade serve`` does not leave a tritonserver behind."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    except (OSError, AttributeError):  # not Linux: the leftover reaper still cleans up
        pass


def _kill_group(pid: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, signal.SIGKILL)


def process_start_time(pid: int) -> int | None:
    """The process's start time in clock ticks since boot (None if there is no such
    process): with the pid it identifies a process even after pids are reused."""
    stat = parent_and_start(pid)
    return None if stat is None else stat[1]


def write_owner(workdir: Path, server_pid: int, shm_prefix: str) -> None:
    owner = {
        "pid": os.getpid(),
        "start": process_start_time(os.getpid()),
        "server_pid": server_pid,
        "shm_prefix": shm_prefix,
    }
    target = workdir / OWNER_FILE
    partial = target.with_suffix(".partial")
    partial.write_text(json.dumps(owner))
    partial.replace(target)


def _owner_alive(owner: dict[str, object]) -> bool:
    pid = owner.get("pid")
    if not isinstance(pid, int):
        return False
    return process_start_time(pid) == owner.get("start")


def reap_leftovers(tmp: Path | None = None) -> list[Path]:
    """Remove what local runs whose owning process died left behind: the tritonserver and
    its stubs if still running, their shm regions and the run directory. Runs whose owner
    is alive (another ``cascade serve`` on the machine) are left alone."""
    root = Path(tempfile.gettempdir()) if tmp is None else tmp
    reaped = []
    for run in root.glob(f"{RUN_PREFIX}*"):
        try:
            owner = json.loads((run / OWNER_FILE).read_text())
        except (OSError, ValueError):
            continue  # not started yet, or not ours to judge
        if not isinstance(owner, dict) or _owner_alive(owner):
            continue
        server = owner.get("server_pid")
        if isinstance(server, int) and _is_tritonserver(server):
            _kill_group(server)
        prefix = owner.get("shm_prefix")
        remove_shared_memory(prefix if isinstance(prefix, str) else shm_prefix_for(run))
        shutil.rmtree(run, ignore_errors=True)
        log.info("removed the leftovers of a dead run: %s", run)
        reaped.append(run)
    return reaped


def _is_tritonserver(pid: int) -> bool:
    try:
        return b"tritonserver" in Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return False
