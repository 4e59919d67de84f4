"""The e2e tier: the chart and the operator against a real kube-apiserver.

One control plane per session (etcd, kube-apiserver, kube-controller-manager; ~8 s to start
once built); the chart is installed once with the Helm SDK, and the operator runs as the chart
renders it: its Deployment's command, args and environment, authenticated with the token the
controller manager minted for the chart's ServiceAccount, so RBAC is the chart's own.

The API server is 1.20, the newest Kubernetes whose source builds here; the chart targets
>= 1.27. The installed copy of the chart differs in two things only, both said here: its
``kubeVersion`` admits 1.20, and the PodDisruptionBudgets are off (1.20 has no ``policy/v1``).
CEL rules are not evaluated by 1.20; the schema tests check them.
"""

from __future__ import annotations

import base64
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.e2e.cluster import ControlPlane
from tests.e2e.pods import PodProcess, PodVolumes, temp_workdir
from tests.integration.metrics_feed import MetricsFeed

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "charts" / "cascade"
RELEASE = "cascade"
SYSTEM_NS = "cascade-system"
API = "serving.cascade.dev/v1alpha1"

#: What the e2e install changes from the chart's defaults, and why.
E2E_VALUES: dict[str, Any] = {
    "graph": {"disruptionBudget": False},
    "operator": {"podDisruptionBudget": {"enabled": False}, "extraArgs": []},
}


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if "tests/e2e/" in str(item.fspath):
            item.add_marker(pytest.mark.e2e)


@pytest.fixture(scope="session")
def control_plane(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ControlPlane]:
    with ControlPlane(tmp_path_factory.mktemp("control-plane")) as cp:
        yield cp


@pytest.fixture(scope="session")
def feed() -> Iterator[MetricsFeed]:
    """Scripted Prometheus and experiment reports (no pods run, so nothing can be scraped)."""
    with MetricsFeed() as f:
        yield f


def chart_copy(dest: Path) -> Path:
    """The chart as a 1.20 server takes it: ``kubeVersion`` admits 1.20, and the CRDs lose
    their CEL rules (``x-kubernetes-validations``, which 1.20's typed server-side apply refuses
    as an undeclared field; the operator checks the same rules). Nothing else changes."""
    target = dest / "cascade"
    shutil.copytree(CHART, target)
    meta = yaml.safe_load((target / "Chart.yaml").read_text())
    meta["kubeVersion"] = ">=1.20.0-0"
    (target / "Chart.yaml").write_text(yaml.safe_dump(meta, sort_keys=False))
    for path in (target / "crds").glob("*.yaml"):
        docs = [_without_cel(d) for d in yaml.safe_load_all(path.read_text()) if d]
        path.write_text(yaml.safe_dump_all(docs, sort_keys=False))
    return target


def _without_cel(node: Any) -> Any:
    if isinstance(node, dict):
        return {k: _without_cel(v) for k, v in node.items() if k != "x-kubernetes-validations"}
    if isinstance(node, list):
        return [_without_cel(v) for v in node]
    return node


@pytest.fixture(scope="session")
def release(
    control_plane: ControlPlane, feed: MetricsFeed, tmp_path_factory: pytest.TempPathFactory
) -> dict[str, Any]:
    """``helm install cascade`` of the chart into ``cascade-system`` (the Helm SDK, real helm)."""
    import helm_python as helm

    chart = chart_copy(tmp_path_factory.mktemp("chart"))
    values = yaml.safe_load(yaml.safe_dump(E2E_VALUES))
    values["monitoring"] = {"prometheusUrl": feed.url}
    values["operator"]["extraArgs"] = ["--reports-url", feed.url, "--tick", "1"]
    with helm.Config(kubeconfig_path=str(control_plane.kubeconfig), namespace=SYSTEM_NS) as cfg:
        summary: dict[str, Any] = cfg.install(
            str(chart), RELEASE, values, namespace=SYSTEM_NS, create_namespace=True, timeout=120
        )
    return summary


def service_account_token(cp: ControlPlane, ns: str, name: str) -> dict[str, str]:
    """The token Secret the controller manager minted for a ServiceAccount: token, ca.crt,
    namespace, as the kubelet mounts them."""

    def secret() -> dict[str, Any] | None:
        sa = cp.get(f"/api/v1/namespaces/{ns}/serviceaccounts/{name}")
        for ref in (sa or {}).get("secrets") or []:
            found: dict[str, Any] | None = cp.get(f"/api/v1/namespaces/{ns}/secrets/{ref['name']}")
            if found and "token" in (found.get("data") or {}):
                return found
        return None

    found = cp.wait_for(secret, 30, f"the token of ServiceAccount {ns}/{name}")
    return {k: base64.b64decode(v).decode() for k, v in found["data"].items()}


def deployment(cp: ControlPlane, ns: str, name: str) -> dict[str, Any]:
    found = cp.get(f"/apis/apps/v1/namespaces/{ns}/deployments/{name}")
    assert found is not None, f"no Deployment {ns}/{name}"
    return dict(found)


@pytest.fixture(scope="session")
def operator(control_plane: ControlPlane, release: dict[str, Any]) -> Iterator[PodProcess]:
    """The chart's operator Deployment, run as its pod: same command, args, env, user,
    read-only root and the chart ServiceAccount's token."""
    op = operator_pod(control_plane)
    op.start()
    try:
        op.wait_until(lambda: _healthz(op), 60, "the operator's /healthz")
        yield op
    finally:
        op.stop()


def operator_pod(cp: ControlPlane) -> PodProcess:
    dep = deployment(cp, SYSTEM_NS, f"{RELEASE}-operator")
    spec = dep["spec"]["template"]["spec"]
    volumes = PodVolumes(
        service_account=service_account_token(cp, SYSTEM_NS, spec["serviceAccountName"]),
        api_server=("127.0.0.1", cp.port),
    )
    return PodProcess(spec, "operator", volumes, temp_workdir("cascade-operator-"))


def _healthz(op: PodProcess) -> bool:
    import urllib.request

    port = next(p["containerPort"] for p in op.container["ports"] if p["name"] == "health")
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=2) as r:
            return bool(r.status == 200)
    except OSError:
        return False


@pytest.fixture(autouse=True)
def _operator_stays_healthy(operator: PodProcess) -> Iterator[None]:
    """After every scenario: the operator still runs and was never refused by RBAC."""
    start = len(operator.log.read_text(errors="replace")) if operator.log.exists() else 0
    yield
    text = operator.log.read_text(errors="replace")[start:]
    # The API server's refusal reads "403 Forbidden: ... is forbidden: User ..."; a bare
    # "403" would also match a log line's milliseconds (",403]").
    refused = [line for line in text.splitlines() if "forbidden" in line.lower()]
    assert not refused, "the chart's RBAC refused the operator:\n" + "\n".join(refused[:10])
    assert operator.alive(), f"the operator exited:\n{operator.tail()}"
