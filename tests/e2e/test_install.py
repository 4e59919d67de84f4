"""`helm install` of the chart, and the chart's own graph reconciled by the chart's operator."""

from __future__ import annotations

from typing import Any

import pytest

from tests.e2e.cluster import ControlPlane
from tests.e2e.conftest import SYSTEM_NS
from tests.e2e.pods import PodProcess
from tests.e2e.resources import condition, mark_pods_ready, wait_condition

GRAPH = "recommender"


def _nulls(node: Any, path: str = "") -> list[str]:
    if node is None:
        return [path]
    if isinstance(node, dict):
        return [p for k, v in node.items() for p in _nulls(v, f"{path}.{k}")]
    if isinstance(node, list):
        return [p for i, v in enumerate(node) for p in _nulls(v, f"{path}[{i}]")]
    return []


def test_the_server_accepts_the_crds_with_no_null_defaults(
    control_plane: ControlPlane, release: dict[str, Any]
) -> None:
    crds = control_plane.get("/apis/apiextensions.k8s.io/v1/customresourcedefinitions")
    ours = {
        c["metadata"]["name"]: c for c in crds["items"] if "cascade.dev" in c["metadata"]["name"]
    }
    assert sorted(ours) == [
        "experiments.serving.cascade.dev",
        "inferencegraphs.serving.cascade.dev",
        "models.serving.cascade.dev",
    ]
    for name, crd in ours.items():
        established = condition(crd, "Established")
        assert established is not None, name
        assert established["status"] == "True", name
        assert _nulls(crd["spec"]) == [], name
    # The operator's own discovery sees the resources the CRDs define.
    resources = control_plane.get("/apis/serving.cascade.dev/v1alpha1")["resources"]
    assert {"models", "inferencegraphs", "experiments"} <= {r["name"] for r in resources}


def test_the_charts_graph_gets_its_children_with_owner_references(
    control_plane: ControlPlane, operator: PodProcess
) -> None:
    graph = wait_condition(
        control_plane, SYSTEM_NS, "InferenceGraph", GRAPH, "Progressing", "True", timeout=90
    )
    uid = graph["metadata"]["uid"]
    for path in (
        f"/apis/apps/v1/namespaces/{SYSTEM_NS}/deployments/{GRAPH}-graph",
        f"/apis/apps/v1/namespaces/{SYSTEM_NS}/deployments/{GRAPH}-triton",
        f"/api/v1/namespaces/{SYSTEM_NS}/services/{GRAPH}-graph",
        f"/api/v1/namespaces/{SYSTEM_NS}/services/{GRAPH}-triton",
        f"/api/v1/namespaces/{SYSTEM_NS}/configmaps/{GRAPH}-config",
        f"/api/v1/namespaces/{SYSTEM_NS}/configmaps/{GRAPH}-router",
    ):
        child = control_plane.get(path)
        assert child is not None, path
        (owner,) = child["metadata"]["ownerReferences"]
        assert (owner["kind"], owner["uid"], owner["controller"]) == ("InferenceGraph", uid, True)
    # Defaults the server filled in from the CRD schema (the chart leaves them out).
    assert graph["spec"]["monitoring"] == {"serviceMonitor": True}
    # No Prometheus Operator here: said in a condition, not a crash loop.
    monitor = condition(graph, "ServiceMonitor")
    assert monitor is not None
    assert (monitor["status"], monitor["reason"]) == (
        "False",
        "APINotServed",
    )
    assert "Prometheus Operator" in monitor["message"]


def test_ready_follows_the_deployments_available_replicas(
    control_plane: ControlPlane, operator: PodProcess
) -> None:
    graph = wait_condition(
        control_plane, SYSTEM_NS, "InferenceGraph", GRAPH, "Available", "False", timeout=90
    )
    ready = condition(graph, "Ready")
    assert ready is not None
    assert ready["status"] == "False"
    assert "0/1 available" in ready["message"]
    assert ready["reason"] == "MinimumReplicasUnavailable"

    # Play the kubelet for the graph's pods: the Deployments become available, and so does
    # the graph.
    def pods_ready() -> bool:
        return mark_pods_ready(control_plane, SYSTEM_NS, f"serving.cascade.dev/graph={GRAPH}") >= 2

    control_plane.wait_for(pods_ready, 30, "the graph's pods")
    graph = wait_condition(
        control_plane, SYSTEM_NS, "InferenceGraph", GRAPH, "Ready", "True", timeout=60
    )
    available = condition(graph, "Available")
    assert available is not None
    assert available["status"] == "True"
    assert "graph 1/1 available, triton 1/1 available" in available["message"]


@pytest.mark.parametrize("model", ["user-tower", "ranker-dcn", "ranker-mlp", "combiner"])
def test_the_charts_models_are_ready(
    control_plane: ControlPlane, operator: PodProcess, model: str
) -> None:
    obj = wait_condition(control_plane, SYSTEM_NS, "Model", model, "Ready", "True")
    assert obj["status"]["servingVersion"] == 1
    # Defaults the server filled in from the CRD schema.
    assert obj["spec"]["format"] == "onnx"
