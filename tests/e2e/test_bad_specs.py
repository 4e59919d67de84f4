"""Bad specs: refused by the server with a message naming the field, or accepted and given a
``Ready=False`` condition naming it. Nothing crash-loops (the autouse check: the operator still
runs, and RBAC never refused it)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.e2e.cluster import ApiError, ControlPlane
from tests.e2e.conftest import API
from tests.e2e.pods import PodProcess
from tests.e2e.resources import (
    condition,
    create,
    create_namespace,
    events,
    wait_condition,
)

NS = "bad-specs"
MODELS = ("user-tower", "ranker-dcn", "ranker-mlp", "combiner")


@pytest.fixture(scope="module", autouse=True)
def namespace(control_plane: ControlPlane, operator: PodProcess) -> str:
    create_namespace(control_plane, NS)
    for name in MODELS:
        create(control_plane, NS, model(name))
    return NS


def model(name: str, **spec: Any) -> dict[str, Any]:
    body = {"storageUri": f"file:///models/{name}", "version": 1, **spec}
    return {"apiVersion": API, "kind": "Model", "metadata": {"name": name}, "spec": body}


def graph(name: str, **spec: Any) -> dict[str, Any]:
    body = {"modelRepository": {"build": {}}, "disruptionBudget": {"enabled": False}, **spec}
    return {"apiVersion": API, "kind": "InferenceGraph", "metadata": {"name": name}, "spec": body}


def refused(cp: ControlPlane, obj: dict[str, Any]) -> str:
    with pytest.raises(ApiError) as caught:
        create(cp, NS, obj)
    assert caught.value.status == 422, caught.value
    return str(caught.value)


@pytest.mark.parametrize(
    ("obj", "says"),
    [
        (graph("neg", deadlineMs=-5), "spec.deadlineMs"),
        (
            graph("s3", modelRepository={"uri": "s3://bucket/repo.tar.gz"}),
            "spec.modelRepository.uri",
        ),
        (graph("budget", stages={"ranking": {"budgetMs": "fast"}}), "spec.stages.ranking.budgetMs"),
        (model("neg-version", version=0), "spec.version"),
        (model("bad-runtime", runtime="tensorflow"), "spec.runtime"),
    ],
    ids=["negative-deadline", "s3-uri", "string-budget", "version-0", "unknown-runtime"],
)
def test_the_server_refuses_a_schema_violation_naming_the_field(
    control_plane: ControlPlane, obj: dict[str, Any], says: str
) -> None:
    assert says in refused(control_plane, obj)


def test_a_graph_name_that_would_make_invalid_service_names_is_refused(
    control_plane: ControlPlane,
) -> None:
    message = refused(control_plane, graph("2024-recs"))
    assert "metadata.name" in message
    # Nothing was created for it, so nothing retries against the Service name rule.
    assert control_plane.get(f"/api/v1/namespaces/{NS}/services/2024-recs-triton") is None


def _invalid(cp: ControlPlane, name: str) -> dict[str, Any]:
    obj = wait_condition(cp, NS, "InferenceGraph", name, "Ready", "False", reason="InvalidSpec")
    assert cp.get(f"/apis/apps/v1/namespaces/{NS}/deployments/{name}-graph") is None
    return obj


def test_min_above_max_replicas_gets_an_invalid_spec_condition(control_plane: ControlPlane) -> None:
    # 1.20 does not evaluate the CRD's CEL rule, so the operator's own check answers.
    create(
        control_plane,
        NS,
        graph("minmax", autoscaling={"graph": {"minReplicas": 9, "maxReplicas": 2}}),
    )
    ready = condition(_invalid(control_plane, "minmax"), "Ready")
    assert ready is not None
    assert "maxReplicas (2) is below minReplicas (9)" in ready["message"]
    assert ("minmax", "InvalidSpec") in {(n, r) for n, r, _ in events(control_plane, NS)}


def test_a_stage_budget_over_the_deadline_gets_an_invalid_spec_condition(
    control_plane: ControlPlane,
) -> None:
    create(control_plane, NS, graph("overbudget", deadlineMs=20))
    ready = condition(_invalid(control_plane, "overbudget"), "Ready")
    assert ready is not None
    assert "exceeds deadlineMs (20)" in ready["message"]


def test_a_typo_in_a_variant_config_is_an_invalid_spec_not_a_crash_loop(
    control_plane: ControlPlane,
) -> None:
    """Variant overrides are checked with the data plane's own schema when reconciled."""
    create(control_plane, NS, graph("variants"))
    variants = [
        {"name": "control", "weight": 50},
        {"name": "diverse", "weight": 50, "config": {"rerank": {"mmr_lamda": 0.5}}},
    ]
    experiment = {
        "apiVersion": API,
        "kind": "Experiment",
        "metadata": {"name": "typo"},
        "spec": {"graph": "variants", "variants": variants},
    }
    create(control_plane, NS, experiment)
    obj = wait_condition(
        control_plane, NS, "Experiment", "typo", "Ready", "False", reason="InvalidSpec"
    )
    ready = condition(obj, "Ready")
    assert ready is not None
    assert "spec.variants.1.config: rerank.mmr_lamda: Extra inputs" in ready["message"]


def test_a_graph_naming_a_missing_model_says_which(control_plane: ControlPlane) -> None:
    create(control_plane, NS, graph("missing", stages={"ranking": {"models": ["ranker-xyz"]}}))
    obj = wait_condition(
        control_plane, NS, "InferenceGraph", "missing", "Ready", "False", reason="ModelNotReady"
    )
    ready = condition(obj, "Ready")
    assert ready is not None
    assert "ranker-xyz" in ready["message"]


def test_strict_kubectl_refuses_a_typo_the_server_would_prune(
    control_plane: ControlPlane, tmp_path: Path
) -> None:
    typo = graph("typo")
    typo["metadata"]["namespace"] = NS
    typo["spec"]["stages"] = {"retreival": {"budgetMs": 5}}
    manifest = tmp_path / "typo.yaml"
    manifest.write_text(yaml.safe_dump(typo))
    out = control_plane.kubectl("apply", "--validate=strict", "-f", str(manifest), check=False)
    assert "retreival" in out, out
    assert (
        control_plane.get(
            f"/apis/serving.cascade.dev/v1alpha1/namespaces/{NS}/inferencegraphs/typo"
        )
        is None
    )

    # Without validation the server prunes the unknown field (the CRD is structural), the
    # graph gets the default stages, and the operator never sees the typo.
    control_plane.kubectl("apply", "--validate=false", "-f", str(manifest))
    stored = control_plane.get(
        f"/apis/serving.cascade.dev/v1alpha1/namespaces/{NS}/inferencegraphs/typo"
    )
    assert "retreival" not in stored["spec"].get("stages", {})
