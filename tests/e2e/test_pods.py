"""Pod-shaped smoke tests: the containers the operator renders, run as their pods would run.

The operator renders the graph's Deployments on the real server; each container then runs
here with exactly the manifest's command, args and environment, as user 10001, with a read-only
root filesystem, the model repository mounted read-only from its PersistentVolumeClaim, the
ConfigMaps as files, and a network namespace of its own (pods have their own addresses; Triton
and the graph both listen on 8000). A test talks to each pod at its address, the way its
Service and the kubelet's probes do. (The operator itself runs pod-shaped for every e2e test:
see ``conftest.operator``.)
"""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.cluster import ControlPlane
from tests.e2e.conftest import API, deployment
from tests.e2e.podnet import PodNetwork
from tests.e2e.pods import PodProcess, PodVolumes, temp_workdir
from tests.e2e.resources import create, create_namespace, wait_condition

NS = "pods"
GRAPH = "recs"
MODELS = ("user-tower", "ranker-dcn", "ranker-mlp", "combiner")
CLAIM = "models"


@pytest.fixture(scope="module")
def rendered(control_plane: ControlPlane, operator: PodProcess) -> dict[str, dict[str, Any]]:
    """The graph's Deployments and ConfigMaps as the operator rendered them on the server."""
    create_namespace(control_plane, NS)
    for name in MODELS:
        spec = {"storageUri": f"pvc://{CLAIM}/{name}", "version": 1}
        meta = {"name": name}
        create(
            control_plane, NS, {"apiVersion": API, "kind": "Model", "metadata": meta, "spec": spec}
        )
    create(
        control_plane,
        NS,
        {
            "apiVersion": API,
            "kind": "InferenceGraph",
            "metadata": {"name": GRAPH},
            "spec": {
                "modelRepository": {"pvc": CLAIM},
                "disruptionBudget": {"enabled": False},
                # Roomy budgets: these tests are about reachability on a busy two-core machine;
                # latency under load is measured in benchmarks/.
                "deadlineMs": 5000,
                "stages": {
                    "retrieval": {"budgetMs": 2000},
                    "ranking": {"budgetMs": 2000},
                    "rerank": {"budgetMs": 500},
                },
            },
        },
    )
    wait_condition(control_plane, NS, "InferenceGraph", GRAPH, "Progressing", "True")
    out: dict[str, dict[str, Any]] = {}
    for role in ("graph", "triton"):
        out[role] = deployment(control_plane, NS, f"{GRAPH}-{role}")
    for cm in ("config", "router"):
        found = control_plane.get(f"/api/v1/namespaces/{NS}/configmaps/{GRAPH}-{cm}")
        assert found is not None
        out[f"configmap/{GRAPH}-{cm}"] = found
    return out


@pytest.fixture(scope="module")
def network() -> Iterator[PodNetwork]:
    with PodNetwork() as net:
        yield net


def probe_ok(pod: PodProcess, address: str, which: str = "readinessProbe") -> bool:
    """The container's own probe (httpGet path and port), sent to the pod's address."""
    get = pod.container[which]["httpGet"]
    port = get["port"]
    if isinstance(port, str):
        port = next(p["containerPort"] for p in pod.container["ports"] if p["name"] == port)
    try:
        with urllib.request.urlopen(f"http://{address}:{port}{get['path']}", timeout=2) as r:
            return bool(r.status == 200)
    except (urllib.error.URLError, OSError):
        return False


def start_pod(
    rendered: dict[str, dict[str, Any]],
    role: str,
    network: PodNetwork,
    repo: Path,
    hosts: dict[str, str] | None = None,
) -> tuple[PodProcess, str]:
    spec = rendered[role]["spec"]["template"]["spec"]
    config_maps = {
        name.removeprefix("configmap/"): cm["data"]
        for name, cm in rendered.items()
        if name.startswith("configmap/")
    }
    netns, address = network.add()
    pod = PodProcess(
        spec,
        role,
        PodVolumes(config_maps=config_maps, claims={CLAIM: repo}, hosts=hosts or {}),
        temp_workdir(f"cascade-{role}-"),
        netns=netns,
    )
    pod.start()
    return pod, address


@pytest.fixture(scope="module")
def triton_pod(
    rendered: dict[str, dict[str, Any]], network: PodNetwork, movielens_repo: Path
) -> Iterator[tuple[PodProcess, str]]:
    pod, address = start_pod(rendered, "triton", network, movielens_repo)
    try:
        pod.wait_until(lambda: probe_ok(pod, address), 180, "Triton's readiness probe")
        yield pod, address
    finally:
        pod.stop()


def test_the_rendered_pods_run_unprivileged_on_a_read_only_root(
    rendered: dict[str, dict[str, Any]],
) -> None:
    for role in ("graph", "triton"):
        spec = rendered[role]["spec"]["template"]["spec"]
        (container,) = spec["containers"]
        assert container["securityContext"]["readOnlyRootFilesystem"] is True
        assert spec["securityContext"]["runAsUser"] == 10001
        models = next(v for v in spec["volumes"] if v["name"] == "models")
        assert models["persistentVolumeClaim"] == {"claimName": CLAIM, "readOnly": True}


def test_triton_answers_its_probes_and_serves_at_the_pod_address(
    triton_pod: tuple[PodProcess, str],
) -> None:
    pod, address = triton_pod
    assert probe_ok(pod, address, "livenessProbe")
    status = (Path("/proc") / str(pod.process.pid) / "status").read_text()  # type: ignore[union-attr]
    assert "Uid:\t10001" in status
    with urllib.request.urlopen(f"http://{address}:8000/v2/models/ranker_dcn", timeout=5) as r:
        meta = json.loads(r.read())
    assert meta["name"] == "ranker_dcn"
    assert "1" in meta["versions"]


def test_the_graph_pod_reaches_triton_by_its_service_name_and_recommends(
    rendered: dict[str, dict[str, Any]],
    network: PodNetwork,
    movielens_repo: Path,
    triton_pod: tuple[PodProcess, str],
) -> None:
    _, triton_address = triton_pod
    hosts = {f"{GRAPH}-triton": triton_address, f"{GRAPH}-triton.{NS}.svc": triton_address}
    pod, address = start_pod(rendered, "graph", network, movielens_repo, hosts)
    try:
        pod.wait_until(lambda: probe_ok(pod, address, "startupProbe"), 240, "the graph's startup")
        pod.wait_until(lambda: probe_ok(pod, address), 60, "the graph's readiness probe")
        body = json.dumps({"user_id": "42", "k": 5}).encode()
        answers = []
        for _ in range(3):  # the first call may miss a budget while caches warm
            request = urllib.request.Request(
                f"http://{address}:8000/v1/recommend", body, {"Content-Type": "application/json"}
            )
            with urllib.request.urlopen(request, timeout=30) as r:
                answers.append(json.loads(r.read()))
        answer = answers[-1]
        assert len(answer["items"]) == 5, answer
        # Full quality: every stage's model answered from the Triton pod, none fell back.
        assert answer["fallbacks"] == [], [a["fallbacks"] for a in answers]
        assert answer["model_versions"] == {
            "user_tower": 1, "ranker_dcn": 1, "ranker_mlp": 1, "combiner": 1
        }, answer  # fmt: skip
    finally:
        pod.stop()
