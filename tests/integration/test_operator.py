"""The real operator (`cascade operator`, kopf) against the Kubernetes API emulator over HTTP.

One emulator and one metrics feed per module; the operator runs as a subprocess watching all
namespaces, and each scenario works in a namespace of its own. The canary analysis and the
autoscaler read the scripted feed (no pods run, so nothing real could be scraped); the business
metric is a real ``ab_router`` analysis of simulated exposures and clicks.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.request import urlopen

import pytest
import yaml

from tests.integration.kube_emulator import KubeEmulator
from tests.integration.metrics_feed import MetricsFeed, business_report

pytestmark = [pytest.mark.integration, pytest.mark.timeout(300)]

API = "serving.cascade.dev/v1alpha1"
PLURALS = {"Model": "models", "InferenceGraph": "inferencegraphs", "Experiment": "experiments"}
MODELS = ("user-tower", "ranker-dcn", "ranker-mlp", "combiner")
HEALTHY = {"requests": 500.0, "error_rate": 0.0, "p99_ms": 20.0}
FAST_CANARY = {
    "steps": [10, 50, 100],
    "intervalSeconds": 1,
    "minRequests": 10,
    "progressDeadlineSeconds": 10,
}


class Operator:
    """`cascade operator` as a subprocess; its log goes to a file shown on failure."""

    def __init__(
        self,
        cluster: KubeEmulator,
        feed: MetricsFeed,
        log: Path,
        *extra: str,
        metrics_port: int = 0,
    ) -> None:
        self.cluster, self.feed, self.log, self.extra = cluster, feed, log, extra
        self.metrics_port = metrics_port
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        env = {**os.environ, "KUBECONFIG": str(self.cluster.kubeconfig)}
        cascade = Path(sys.executable).with_name("cascade")
        args = [
            str(cascade),
            "operator",
            "--all-namespaces",
            "--tick",
            "0.3",
            "--prometheus-url",
            self.feed.url,
            "--reports-url",
            self.feed.url,
            "--metrics-port",
            str(self.metrics_port),
            "--liveness-port",
            "0",
            "--image",
            "cascade:test",
            "--factory-image",
            "cascade-factory:test",
            *(self.extra or ("--standalone",)),
        ]
        with self.log.open("ab") as out:
            self.process = subprocess.Popen(args, stdout=out, stderr=subprocess.STDOUT, env=env)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.process = None

    def tail(self, lines: int = 60) -> str:
        return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[KubeEmulator]:
    with KubeEmulator(tmp_path_factory.mktemp("kube")) as emulator:
        yield emulator


@pytest.fixture(scope="module")
def feed() -> Iterator[MetricsFeed]:
    with MetricsFeed() as f:
        yield f


@pytest.fixture(scope="module")
def operator(
    cluster: KubeEmulator, feed: MetricsFeed, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Operator]:
    log = tmp_path_factory.mktemp("operator") / "operator.log"
    op = Operator(cluster, feed, log, metrics_port=free_port())
    op.start()
    yield op
    op.stop()


@pytest.fixture(autouse=True)
def _fresh_feed(feed: MetricsFeed) -> None:
    feed.values.clear()
    feed.stage_p99_ms.clear()
    feed.fallback_rates.clear()
    feed.reports.clear()


# ---- helpers ------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def create_models(cluster: KubeEmulator, ns: str, canary: dict[str, Any] | None = None) -> None:
    for name in MODELS:
        spec: dict[str, Any] = {"storageUri": f"file:///models/{name}", "version": 1}
        if canary is not None and name == "ranker-dcn":
            spec["canary"] = canary
        cluster.create(
            {
                "apiVersion": API,
                "kind": "Model",
                "metadata": {"name": name, "namespace": ns},
                "spec": spec,
            }
        )


def create_graph(cluster: KubeEmulator, ns: str, name: str = "recs", **spec: Any) -> None:
    body = {"modelRepository": {"build": {}}, **spec}
    cluster.create(
        {
            "apiVersion": API,
            "kind": "InferenceGraph",
            "metadata": {"name": name, "namespace": ns},
            "spec": body,
        }
    )


def create_experiment(
    cluster: KubeEmulator, ns: str, name: str, variants: list[dict[str, Any]]
) -> None:
    spec = {"graph": "recs", "variants": variants, "metrics": [{"name": "click"}]}
    meta = {"name": name, "namespace": ns}
    cluster.create({"apiVersion": API, "kind": "Experiment", "metadata": meta, "spec": spec})


def condition(obj: dict[str, Any] | None, type_: str = "Ready") -> dict[str, Any] | None:
    for c in ((obj or {}).get("status") or {}).get("conditions", []):
        if c["type"] == type_:
            return dict(c)
    return None


def roll_out(cluster: KubeEmulator, ns: str) -> None:
    """Plays the deployment controller (the emulator has none): every Deployment in ``ns``
    reports its replicas updated and available for its current generation."""
    for d in cluster.list("apps/v1", "Deployment", ns):
        replicas = int(d["spec"].get("replicas", 1))
        status = {
            "observedGeneration": d["metadata"].get("generation", 1),
            "replicas": replicas,
            "updatedReplicas": replicas,
            "readyReplicas": replicas,
            "availableReplicas": replicas,
        }
        if (d.get("status") or {}) != status:
            cluster.patch(
                "apps/v1", "Deployment", d["metadata"]["name"], {"status": status}, ns, "status"
            )


def wait_ready(
    cluster: KubeEmulator, ns: str, kind: str, name: str, op: Operator
) -> dict[str, Any]:
    def ready() -> dict[str, Any] | None:
        if kind == "InferenceGraph":
            roll_out(cluster, ns)
        obj = cluster.get(API, kind, name, ns)
        c = condition(obj)
        return obj if c is not None and c["status"] == "True" else None

    try:
        return cluster.wait_for(ready, timeout=30, what=f"{kind} {ns}/{name} Ready")
    except AssertionError as err:
        raise AssertionError(f"{err}\n--- operator log ---\n{op.tail()}") from None


def model_status(cluster: KubeEmulator, ns: str, name: str = "ranker-dcn") -> dict[str, Any]:
    obj = cluster.get(API, "Model", name, ns) or {}
    return dict(obj.get("status") or {})


def canary_phase(cluster: KubeEmulator, ns: str) -> str | None:
    return (model_status(cluster, ns).get("canary") or {}).get("phase")


def router_weight(cluster: KubeEmulator, ns: str, graph: str = "recs") -> int | None:
    """The canary's share in the router ConfigMap the graph pods read (None: no canary)."""
    cm = cluster.get("v1", "ConfigMap", f"{graph}-router", ns)
    if cm is None:
        return None
    catalog = yaml.safe_load(cm["data"]["experiments.yaml"])
    for layer in catalog["layers"]:
        for exp in layer["experiments"]:
            if exp["name"].startswith("canary-"):
                return int(next(v["weight"] for v in exp["variants"] if v["name"] == "canary"))
    return None


def pinned_versions(cluster: KubeEmulator, ns: str, graph: str = "recs") -> dict[str, int]:
    cm = cluster.get("v1", "ConfigMap", f"{graph}-config", ns)
    assert cm is not None
    return dict(yaml.safe_load(cm["data"]["graph.yaml"])["model_versions"])


def bump(cluster: KubeEmulator, ns: str, version: int, **canary: Any) -> None:
    patch: dict[str, Any] = {"spec": {"version": version}}
    if canary:
        patch["spec"]["canary"] = canary
    cluster.patch(API, "Model", "ranker-dcn", patch, ns)


def reads(
    cluster: KubeEmulator, ns: str, plural: str, name: str | None = None, *, since: int = 0
) -> int:
    """How often the operator read ``name`` (a GET), or listed ``plural`` (no name), in ``ns``
    after its first ``since`` requests. The test's own helpers do not go through HTTP."""
    action = "FETCH" if name is not None else "LIST"
    return sum(
        1
        for r in list(cluster.requests)[since:]
        if r.action is not None
        and r.action.value == action
        and r.resource is not None
        and r.resource.plural == plural
        and (r.namespace, r.name) == (ns, name)
    )


def wait_reconciled(
    cluster: KubeEmulator, ns: str, kind: str, name: str, op: Operator, times: int = 2
) -> None:
    """Wait until the operator has finished ``times`` reconciles of ``kind`` ``ns/name`` that
    started after this call, counted in the requests it makes.

    Each reconcile first reads its object, one reconcile per object at a time, so ``times + 1``
    reads mean ``times`` finished. A graph reconcile also reads each Model it serves, once: a
    Model's own reads are its reads less those of the namespace's graph (``recs``), and less
    one more for a graph reconcile that was under way at the start.
    """
    mark = len(cluster.requests)

    def started() -> int:
        n = reads(cluster, ns, PLURALS[kind], name, since=mark)
        if kind == "Model":
            n -= reads(cluster, ns, "inferencegraphs", "recs", since=mark) + 1
        return n

    what = f"{times} reconciles of {kind} {ns}/{name}"
    try:
        cluster.wait_for(lambda: started() > times, timeout=15, what=what)
    except AssertionError as err:
        raise AssertionError(f"{err}\n--- operator log ---\n{op.tail()}") from None


def events(cluster: KubeEmulator, ns: str) -> list[tuple[str, str]]:
    return [(e.get("reason", ""), e.get("message", "")) for e in cluster.list("v1", "events", ns)]


# ---- scenarios ----------------------------------------------------------------------------


def test_a_graph_gets_its_children(cluster: KubeEmulator, operator: Operator) -> None:
    ns = "children"
    create_models(cluster, ns)
    create_graph(cluster, ns)
    graph = wait_ready(cluster, ns, "InferenceGraph", "recs", operator)
    assert graph["status"]["observedGeneration"] == graph["metadata"]["generation"]
    assert graph["status"]["endpoint"] == "http://recs-graph.children.svc:8000"

    groups = {"Deployment": "apps/v1", "PodDisruptionBudget": "policy/v1"}
    names = {
        (kind, o["metadata"]["name"])
        for kind in ("Deployment", "Service", "ConfigMap", "PodDisruptionBudget")
        for o in cluster.list(groups.get(kind, "v1"), kind, ns)
    }
    assert names >= {
        ("Deployment", "recs-graph"),
        ("Deployment", "recs-triton"),
        ("Service", "recs-graph"),
        ("Service", "recs-triton"),
        ("ConfigMap", "recs-config"),
        ("ConfigMap", "recs-router"),
        ("PodDisruptionBudget", "recs-graph"),
    }
    uid = graph["metadata"]["uid"]
    deployment = cluster.get("apps/v1", "Deployment", "recs-graph", ns)
    assert deployment is not None
    assert deployment["metadata"]["ownerReferences"][0]["uid"] == uid
    pod = deployment["spec"]["template"]["spec"]
    assert pod["containers"][0]["image"] == "cascade:test"
    assert pod["initContainers"][0]["image"] == "cascade-factory:test"  # the model build
    assert pinned_versions(cluster, ns) == {
        "user_tower": 1,
        "ranker_dcn": 1,
        "ranker_mlp": 1,
        "combiner": 1,
    }
    for name in MODELS:
        assert model_status(cluster, ns, name)["servingVersion"] == 1
    # The graph reads the Models it names, by name: no reconcile lists the namespace's Models.
    assert reads(cluster, ns, "models") == 0
    assert reads(cluster, ns, "inferencegraphs", "recs") > 0

    # Reconciling again changes nothing: no watch storm from an idempotent operator.
    version = deployment["metadata"]["resourceVersion"]
    wait_reconciled(cluster, ns, "InferenceGraph", "recs", operator, times=3)
    again = cluster.get("apps/v1", "Deployment", "recs-graph", ns)
    assert again is not None
    assert again["metadata"]["resourceVersion"] == version


def test_service_monitor_appears_once_its_crd_exists(
    cluster: KubeEmulator, operator: Operator
) -> None:
    from tests.integration.kube_emulator import ResourceSpec

    ns = "children"  # the graph from the previous scenario (module order), or make one
    if cluster.get(API, "InferenceGraph", "recs", ns) is None:
        create_models(cluster, ns)
        create_graph(cluster, ns)
    assert cluster.list("v1", "ConfigMap", ns)  # the graph exists
    cluster.add_resource(
        ResourceSpec(
            group="monitoring.coreos.com",
            version="v1",
            plural="servicemonitors",
            kind="ServiceMonitor",
            namespaced=True,
        )
    )
    monitor = cluster.wait_for(
        lambda: cluster.get("monitoring.coreos.com/v1", "ServiceMonitor", "recs-metrics", ns),
        timeout=15,
        what="the graph's ServiceMonitor",
    )
    assert monitor["spec"]["selector"]["matchLabels"] == {"serving.cascade.dev/graph": "recs"}


def test_canary_advances_on_healthy_metrics_and_promotes(
    cluster: KubeEmulator, feed: MetricsFeed, operator: Operator
) -> None:
    ns = "canary-ok"
    create_models(cluster, ns, canary=FAST_CANARY)
    create_graph(cluster, ns)
    wait_ready(cluster, ns, "InferenceGraph", "recs", operator)
    feed.set(**HEALTHY)
    feed.set_report("canary-ranker-dcn", business_report(0.10, 0.10))

    bump(cluster, ns, 2)
    weights: list[int] = []

    def promoted() -> bool:
        w = router_weight(cluster, ns)
        if w is not None and (not weights or weights[-1] != w):
            weights.append(w)
        return canary_phase(cluster, ns) == "Promoted"

    cluster.wait_for(promoted, timeout=40, what="the canary to promote")
    assert weights[:2] == [10, 50], weights  # every step was served before promotion
    status = model_status(cluster, ns)
    assert status["servingVersion"] == 2
    assert "promoted" in status["canary"]["reason"]
    assert any("canary-ranker-dcn" in q or 'variant="canary"' in q for q in feed.queries)
    cluster.wait_for(lambda: pinned_versions(cluster, ns)["ranker_dcn"] == 2, what="v2 pinned")
    cluster.wait_for(lambda: router_weight(cluster, ns) is None, what="the split to end")
    reasons = {r for r, _ in events(cluster, ns)}
    assert {"CanaryStarted", "CanaryAdvance", "CanaryPromote"} <= reasons


@pytest.mark.parametrize(
    ("fed", "report", "why"),
    [
        ({**HEALTHY, "error_rate": 0.2}, None, "error rate 20.00% is above 1.00%"),
        ({**HEALTHY, "p99_ms": 95.0}, None, "p99 95.0 ms is above 50 ms"),
        (HEALTHY, (0.12, 0.02), "experiment analysis says harmful"),
    ],
    ids=["errors", "latency", "business-metric"],
)
def test_bad_evidence_rolls_back_with_the_reason(
    cluster: KubeEmulator,
    feed: MetricsFeed,
    operator: Operator,
    fed: dict[str, float],
    report: tuple[float, float] | None,
    why: str,
) -> None:
    ns = f"rollback-{len(why) % 97}-{int(time.time() * 1000) % 100000}"
    create_models(cluster, ns, canary=FAST_CANARY)
    create_graph(cluster, ns)
    wait_ready(cluster, ns, "InferenceGraph", "recs", operator)
    feed.set(**fed)
    if report is not None:
        feed.set_report("canary-ranker-dcn", business_report(*report))

    bump(cluster, ns, 2)
    cluster.wait_for(lambda: canary_phase(cluster, ns) == "RolledBack", timeout=30, what="rollback")
    status = model_status(cluster, ns)
    assert status["servingVersion"] == 1  # the last good version keeps serving
    assert why in status["canary"]["reason"], status["canary"]["reason"]
    assert why in status["history"][-1]
    ready = condition(cluster.get(API, "Model", "ranker-dcn", ns))
    assert ready is not None
    assert (ready["status"], ready["reason"]) == ("False", "RolledBack")
    cluster.wait_for(lambda: router_weight(cluster, ns) is None, what="the split to end")
    assert pinned_versions(cluster, ns)["ranker_dcn"] == 1
    assert any(r == "CanaryRollback" and why in m for r, m in events(cluster, ns))
    # The failed version is not retried while the spec names it.
    rolled_back = model_status(cluster, ns)["canary"]
    wait_reconciled(cluster, ns, "Model", "ranker-dcn", operator)
    assert model_status(cluster, ns)["canary"] == rolled_back


def test_pause_and_abort_through_the_spec(
    cluster: KubeEmulator, feed: MetricsFeed, operator: Operator
) -> None:
    ns = "canary-ops"
    interval = 2
    create_models(cluster, ns, canary={**FAST_CANARY, "intervalSeconds": interval})
    create_graph(cluster, ns)
    wait_ready(cluster, ns, "InferenceGraph", "recs", operator)
    feed.set(**HEALTHY)

    bump(cluster, ns, 2, **{**FAST_CANARY, "intervalSeconds": interval, "paused": True})
    cluster.wait_for(lambda: canary_phase(cluster, ns) == "Paused", timeout=15, what="pause")
    # A paused canary does not advance: judged after its step was due, it still holds. Due by
    # the step's start as the operator wrote it (to the second, hence one second more).
    started = datetime.strptime(
        model_status(cluster, ns)["canary"]["stepStartedAt"], "%Y-%m-%dT%H:%M:%SZ"
    ).replace(tzinfo=UTC)
    due = started + timedelta(seconds=interval + 1)
    cluster.wait_for(lambda: datetime.now(UTC) >= due, timeout=15, what="the step to be due")
    wait_reconciled(cluster, ns, "Model", "ranker-dcn", operator)
    assert canary_phase(cluster, ns) == "Paused"
    assert model_status(cluster, ns)["canary"]["weight"] == 10
    assert router_weight(cluster, ns) == 10  # traffic stays split while paused

    bump(cluster, ns, 2, paused=False)
    cluster.wait_for(lambda: canary_phase(cluster, ns) == "Progressing", timeout=15, what="resume")
    bump(cluster, ns, 2, abort=True)
    cluster.wait_for(lambda: canary_phase(cluster, ns) == "Aborted", timeout=15, what="abort")
    status = model_status(cluster, ns)
    assert status["servingVersion"] == 1
    assert "aborted by spec.canary.abort" in status["canary"]["reason"]
    cluster.wait_for(lambda: router_weight(cluster, ns) is None, what="the split to end")


def test_a_restarted_operator_resumes_mid_canary(
    cluster: KubeEmulator, feed: MetricsFeed, operator: Operator
) -> None:
    ns = "canary-restart"
    create_models(cluster, ns, canary={**FAST_CANARY, "intervalSeconds": 2})
    create_graph(cluster, ns)
    wait_ready(cluster, ns, "InferenceGraph", "recs", operator)
    feed.set(**HEALTHY)

    bump(cluster, ns, 2)
    cluster.wait_for(lambda: router_weight(cluster, ns) == 50, timeout=20, what="the second step")
    operator.stop()
    before = model_status(cluster, ns)["canary"]
    assert before["weight"] == 50
    assert before["phase"] == "Progressing"

    operator.start()
    weights: list[int] = []

    def promoted() -> bool:
        w = router_weight(cluster, ns)
        if w is not None:
            weights.append(w)
        return canary_phase(cluster, ns) == "Promoted"

    cluster.wait_for(promoted, timeout=40, what="the canary to promote after the restart")
    assert min(weights, default=50) >= 50, weights  # never back to the first step
    after = model_status(cluster, ns)
    assert after["canary"]["startedAt"] == before["startedAt"]  # the same rollout, resumed
    assert after["servingVersion"] == 2


def test_an_invalid_spec_gets_a_condition_and_creates_nothing(
    cluster: KubeEmulator, operator: Operator
) -> None:
    ns = "invalid"
    create_models(cluster, ns)
    mark = len(cluster.requests)
    # Schema-valid (the server accepts it) but inconsistent: the default ranking budget (25 ms)
    # does not fit a 20 ms deadline. Only the operator can say so.
    create_graph(cluster, ns, deadlineMs=20)
    create_experiment(
        cluster, ns, "bad-weights", [{"name": "a", "weight": 70}, {"name": "b", "weight": 70}]
    )

    def invalid(kind: str, name: str) -> dict[str, Any] | None:
        c = condition(cluster.get(API, kind, name, ns))
        return c if c is not None and c["reason"] == "InvalidSpec" else None

    graph = cluster.wait_for(
        lambda: invalid("InferenceGraph", "recs"), timeout=20, what="graph condition"
    )
    assert graph["status"] == "False"
    assert "exceeds deadlineMs (20)" in graph["message"], graph["message"]
    experiment = cluster.wait_for(
        lambda: invalid("Experiment", "bad-weights"), timeout=20, what="experiment condition"
    )
    assert experiment["message"].startswith("spec.variants: "), experiment["message"]
    assert "sum to 140" in experiment["message"]

    wait_reconciled(cluster, ns, "InferenceGraph", "recs", operator)
    assert cluster.list("apps/v1", "Deployment", ns) == []
    assert cluster.list("v1", "ConfigMap", ns) == []
    written = {
        r.resource.plural
        for r in cluster.requests.writes(since=mark)
        if r.resource is not None and f"/namespaces/{ns}/" in r.url.path
    }
    assert written <= {"inferencegraphs", "experiments", "models", "events"}, written
    assert any(r == "InvalidSpec" for r, _ in events(cluster, ns))

    # Fixing the spec creates the children.
    cluster.patch(API, "InferenceGraph", "recs", {"spec": {"deadlineMs": 50}}, ns)
    wait_ready(cluster, ns, "InferenceGraph", "recs", operator)
    assert cluster.get("apps/v1", "Deployment", "recs-graph", ns) is not None


def test_deleting_the_graph_deletes_its_children(cluster: KubeEmulator, operator: Operator) -> None:
    ns = "deletion"
    create_models(cluster, ns)
    create_graph(cluster, ns)
    wait_ready(cluster, ns, "InferenceGraph", "recs", operator)
    assert len(cluster.list("apps/v1", "Deployment", ns)) == 2

    cluster.delete(API, "InferenceGraph", "recs", ns)
    # kopf holds a finalizer while it stops the graph's daemon, then the owner GC runs.
    cluster.wait_for(lambda: cluster.get(API, "InferenceGraph", "recs", ns) is None, what="gone")
    cluster.wait_for(lambda: not cluster.list("apps/v1", "Deployment", ns), what="deployments gone")
    assert cluster.list("v1", "Service", ns) == []
    assert cluster.list("v1", "ConfigMap", ns) == []
    assert cluster.list("policy/v1", "PodDisruptionBudget", ns) == []
    assert len(cluster.list(API, "Model", ns)) == 4  # models are not the graph's children


def test_slo_autoscaling_scales_the_bottleneck(
    cluster: KubeEmulator, feed: MetricsFeed, operator: Operator
) -> None:
    ns = "scaling"
    create_models(cluster, ns)
    create_graph(
        cluster,
        ns,
        autoscaling={
            "scaleUpStabilizationSeconds": 0,
            "scaleDownStabilizationSeconds": 2,
            "graph": {"minReplicas": 1, "maxReplicas": 4},
            "triton": {"minReplicas": 1, "maxReplicas": 3},
        },
    )
    wait_ready(cluster, ns, "InferenceGraph", "recs", operator)

    def replicas(name: str) -> int:
        d = cluster.get("apps/v1", "Deployment", f"recs-{name}", ns)
        return int(d["spec"]["replicas"]) if d else -1

    # Ranking (Triton) at 3x its 25 ms budget, the graph's own stages at 1.6x theirs.
    feed.set_stages(retrieval=24.0, ranking=75.0, rerank=2.0)
    cluster.wait_for(lambda: replicas("triton") >= 2, timeout=15, what="triton to scale up")
    assert replicas("graph") == 1  # held while the bottleneck scales
    cluster.wait_for(lambda: replicas("triton") == 3, timeout=15, what="triton to its maximum")

    # Triton is capped, so the graph's stages are now the stage that can grow.
    cluster.wait_for(lambda: replicas("graph") >= 2, timeout=15, what="the graph to scale up")

    def status() -> dict[str, Any]:
        return dict((cluster.get(API, "InferenceGraph", "recs", ns) or {}).get("status") or {})

    cluster.wait_for(lambda: status()["replicas"] == {"graph": replicas("graph"), "triton": 3})
    assert "pressure" in status()["lastScaleReason"]

    feed.set_stages(retrieval=1.0, ranking=2.0, rerank=0.5)
    cluster.wait_for(
        lambda: replicas("triton") == 1 and replicas("graph") == 1, timeout=30, what="scale down"
    )


def test_fallbacks_scale_a_degrading_stage(
    cluster: KubeEmulator, feed: MetricsFeed, operator: Operator
) -> None:
    """Under load ranking truncates instead of queueing: its fallback rate scales Triton."""
    ns = "degraded"
    create_models(cluster, ns)
    create_graph(cluster, ns, autoscaling={"scaleUpStabilizationSeconds": 0})
    wait_ready(cluster, ns, "InferenceGraph", "recs", operator)
    feed.set_stages(retrieval=5.0, ranking=24.0, rerank=1.0)  # every stage within its budget
    feed.set_fallbacks(ranking=0.4, retrieval=0.0)

    def replicas(name: str) -> int:
        d = cluster.get("apps/v1", "Deployment", f"recs-{name}", ns)
        return int(d["spec"]["replicas"]) if d else -1

    cluster.wait_for(lambda: replicas("triton") >= 2, timeout=15, what="triton to scale up")
    assert replicas("graph") == 1


def test_experiments_route_through_the_graph(
    cluster: KubeEmulator, feed: MetricsFeed, operator: Operator
) -> None:
    ns = "experiments"
    create_models(cluster, ns)
    create_graph(cluster, ns, experiment="diversity")
    diverse = {"name": "diverse", "weight": 50, "config": {"rerank": {"mmr_lambda": 0.5}}}
    create_experiment(cluster, ns, "diversity", [{"name": "control", "weight": 50}, diverse])
    wait_ready(cluster, ns, "Experiment", "diversity", operator)

    def command() -> list[str]:
        d = cluster.get("apps/v1", "Deployment", "recs-graph", ns)
        return list(d["spec"]["template"]["spec"]["containers"][0]["command"]) if d else []

    cluster.wait_for(
        lambda: "diversity" in command(), timeout=15, what="the graph to serve the experiment"
    )
    cm = cluster.get("v1", "ConfigMap", "recs-router", ns)
    assert cm is not None
    assert "mmr_lambda: 0.5" in cm["data"]["experiments.yaml"]


def test_the_operator_exports_its_own_metrics(operator: Operator) -> None:
    """Counted since the restart scenario: reconcile timings, canary decisions, scaling."""
    text = urlopen(f"http://127.0.0.1:{operator.metrics_port}/metrics", timeout=5).read().decode()
    samples = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            name, _, value = line.rpartition(" ")
            samples[name] = float(value)
    assert samples['cascade_operator_reconcile_duration_seconds_count{kind="InferenceGraph"}'] > 0
    assert samples['cascade_operator_canary_decisions_total{decision="promote"}'] >= 1
    assert samples['cascade_operator_invalid_specs_total{kind="InferenceGraph"}'] >= 1
    assert samples['cascade_operator_scale_events_total{deployment="triton",direction="up"}'] >= 2
    key = 'cascade_operator_replicas{deployment="graph",graph="recs",namespace="children"}'
    assert samples[key] == 1


def peers(cluster: KubeEmulator) -> dict[str, Any]:
    peering = cluster.get("kopf.dev/v1", "ClusterKopfPeering", "cascade", None) or {}
    return dict(peering.get("status") or {})


def paused(log: str) -> bool:
    """kopf starts paused until it has read the peering object, then logs each change."""
    resumed = log.rfind("Resuming operations")
    return resumed == -1 or log.rfind("Pausing operations") > resumed


def test_peered_operators_do_not_both_act(
    cluster: KubeEmulator, feed: MetricsFeed, operator: Operator, tmp_path: Path
) -> None:
    """Two replicas on one peering object: the lower priority pauses, the higher acts."""
    operator.stop()  # the standalone operator would act regardless of peering
    cluster.create(
        {"apiVersion": "kopf.dev/v1", "kind": "ClusterKopfPeering", "metadata": {"name": "cascade"}}
    )
    leader = Operator(
        cluster, feed, tmp_path / "leader.log", "--peering", "cascade", "--priority", "100"
    )
    standby = Operator(
        cluster, feed, tmp_path / "standby.log", "--peering", "cascade", "--priority", "10"
    )
    try:
        # The leader first, on the peering object and acting before the standby starts: a
        # replica that reads the object before a higher priority is on it acts until its next
        # read, so two started at once could both act for a moment. Started second, the
        # standby's first read names the leader.
        leader.start()
        cluster.wait_for(
            lambda: len(peers(cluster)) == 1 and not paused(leader.log.read_text(errors="replace")),
            timeout=30,
            what="the leader to act",
        )
        standby.start()
        cluster.wait_for(lambda: len(peers(cluster)) == 2, timeout=30, what="both peers")
        assert sorted(p["priority"] for p in peers(cluster).values()) == [10, 100]
        mark = len(standby.log.read_text(errors="replace"))
        assert paused(standby.log.read_text(errors="replace")), standby.tail()
        assert not paused(leader.log.read_text(errors="replace")), leader.tail()
        ns = "peering"
        create_models(cluster, ns)
        create_graph(cluster, ns)
        wait_ready(cluster, ns, "InferenceGraph", "recs", leader)
        assert "Pausing" not in leader.log.read_text(errors="replace")
        after = standby.log.read_text(errors="replace")[mark:]
        assert f"[{ns}/" not in after, after
        assert "Resuming operations" not in after, after
    finally:
        standby.stop()
        leader.stop()
        operator.start()
