"""`kubectl apply -f examples/` as the README says, deletions, and a namespace going away."""

from __future__ import annotations

from pathlib import Path

from tests.e2e.cluster import ControlPlane
from tests.e2e.conftest import ROOT
from tests.e2e.pods import PodProcess
from tests.e2e.resources import (
    condition,
    cr_path,
    create_namespace,
    mark_pods_ready,
    wait_condition,
)

EXAMPLES = ROOT / "examples"
CHILDREN = (
    "/apis/apps/v1/namespaces/{ns}/deployments/recommender-graph",
    "/apis/apps/v1/namespaces/{ns}/deployments/recommender-triton",
    "/api/v1/namespaces/{ns}/services/recommender-graph",
    "/api/v1/namespaces/{ns}/services/recommender-triton",
    "/api/v1/namespaces/{ns}/configmaps/recommender-config",
    "/api/v1/namespaces/{ns}/configmaps/recommender-router",
)


def apply_examples(cp: ControlPlane, ns: str) -> str:
    create_namespace(cp, ns)
    files = [
        EXAMPLES / "models.yaml",
        EXAMPLES / "inferencegraph.yaml",
        EXAMPLES / "experiment.yaml",
    ]
    args = [f"--filename={f}" for f in files]
    return cp.kubectl("apply", "--validate=strict", f"--namespace={ns}", *args)


def test_the_examples_apply_and_reconcile(
    control_plane: ControlPlane, operator: PodProcess
) -> None:
    out = apply_examples(control_plane, "examples")
    assert "inferencegraph.serving.cascade.dev/recommender created" in out, out
    ns = "examples"
    graph = wait_condition(
        control_plane, ns, "InferenceGraph", "recommender", "Progressing", "True"
    )
    # Defaults the server filled in from the CRD schema (the example leaves them out).
    assert graph["spec"]["autoscaling"]["targetFallbackRate"] == 0.01
    assert graph["spec"]["autoscaling"]["targetQueueDepthPerReplica"] == 4
    assert graph["spec"]["monitoring"] == {"serviceMonitor": True}
    for path in CHILDREN:
        child = control_plane.get(path.format(ns=ns))
        assert child is not None, path
        assert child["metadata"]["ownerReferences"][0]["uid"] == graph["metadata"]["uid"]
    # 1.20 serves no policy/v1: the operator says so instead of failing every reconcile.
    budget = condition(graph, "DisruptionBudget")
    assert budget is not None
    assert (budget["status"], budget["reason"]) == ("False", "APINotServed")

    experiment = wait_condition(control_plane, ns, "Experiment", "diversity", "Ready", "True")
    assert experiment["status"]["phase"] == "Running"
    model = wait_condition(control_plane, ns, "Model", "ranker-dcn", "Ready", "True")
    assert model["spec"]["runtime"] == "triton"  # a server-side default

    control_plane.wait_for(
        lambda: mark_pods_ready(control_plane, ns, "serving.cascade.dev/graph=recommender") >= 2,
        60,
        "the example graph's pods",
    )
    ready = wait_condition(control_plane, ns, "InferenceGraph", "recommender", "Ready", "True")
    assert ready["status"]["endpoint"] == f"http://recommender-graph.{ns}.svc:8000"


def test_deleting_a_graph_garbage_collects_its_children(
    control_plane: ControlPlane, operator: PodProcess
) -> None:
    ns = "deletion"
    apply_examples(control_plane, ns)
    wait_condition(control_plane, ns, "InferenceGraph", "recommender", "Progressing", "True")
    assert all(control_plane.get(p.format(ns=ns)) is not None for p in CHILDREN)

    control_plane.kubectl("delete", f"--namespace={ns}", "inferencegraph", "recommender", "--wait")
    # The real garbage collector removes owned objects asynchronously, pods included.
    control_plane.wait_for(
        lambda: all(control_plane.get(p.format(ns=ns)) is None for p in CHILDREN),
        60,
        "the children to be garbage-collected",
    )
    control_plane.wait_for(
        lambda: not (control_plane.get(f"/api/v1/namespaces/{ns}/pods") or {}).get("items"),
        60,
        "the graph's pods to go",
    )
    assert control_plane.get(cr_path(ns, "Model", "ranker-dcn")) is not None  # not owned


def test_deleting_a_namespace_converges(
    control_plane: ControlPlane, operator: PodProcess, tmp_path: Path
) -> None:
    ns = "namespace-deletion"
    apply_examples(control_plane, ns)
    wait_condition(control_plane, ns, "InferenceGraph", "recommender", "Progressing", "True")
    control_plane.kubectl("delete", "namespace", ns, "--wait=false")
    # kopf's finalizers on the custom resources are released by the running operator; the
    # namespace controller then removes what is left and the namespace itself.
    control_plane.wait_for(
        lambda: control_plane.get(f"/api/v1/namespaces/{ns}") is None,
        120,
        f"namespace {ns} to be deleted",
    )
