"""Child rendering: a pure function of the graph's spec and what the operator knows."""

from __future__ import annotations

from typing import Any

import yaml

from ab_router.design import Catalog, Experiment
from contract.graph_config import GraphConfig
from operators.crds.specs import InferenceGraphSpec
from operators.reconcile.children import (
    CONFIG_HASH,
    CanaryRoute,
    GraphInputs,
    render,
    served_experiment,
)

SPEC = InferenceGraphSpec.model_validate({"modelRepository": {"build": {}}})
VERSIONS = {"user_tower": 1, "ranker_dcn": 3, "ranker_mlp": 1, "combiner": 1}


def inputs(**overrides: Any) -> GraphInputs:
    values: dict[str, Any] = {
        "name": "recs",
        "namespace": "ml",
        "uid": "uid-1",
        "spec": SPEC,
        "image": "cascade:0.1.0",
        "factory_image": "cascade-factory:0.1.0",
        "model_versions": VERSIONS,
    }
    values.update(overrides)
    return GraphInputs(**values)


def by_kind(children: list[dict[str, Any]]) -> dict[tuple[str, str], dict[str, Any]]:
    return {(c["kind"], c["metadata"]["name"]): c for c in children}


def test_children_and_their_owner() -> None:
    children = render(inputs())
    assert sorted(by_kind(children)) == [
        ("ConfigMap", "recs-config"),
        ("ConfigMap", "recs-router"),
        ("Deployment", "recs-graph"),
        ("Deployment", "recs-triton"),
        ("PodDisruptionBudget", "recs-graph"),
        ("Service", "recs-graph"),
        ("Service", "recs-triton"),
    ]
    for c in children:
        assert c["metadata"]["namespace"] == "ml"
        (owner,) = c["metadata"]["ownerReferences"]
        assert owner["uid"] == "uid-1"
        assert owner["kind"] == "InferenceGraph"
        assert owner["controller"]


def test_rendering_is_deterministic() -> None:
    assert render(inputs()) == render(inputs())


def test_service_monitor_only_where_the_crd_exists_and_wanted() -> None:
    assert ("ServiceMonitor", "recs-metrics") in by_kind(render(inputs(service_monitor=True)))
    off = SPEC.model_copy(
        update={"monitoring": SPEC.monitoring.model_copy(update={"service_monitor": False})}
    )
    assert ("ServiceMonitor", "recs-metrics") not in by_kind(
        render(inputs(service_monitor=True, spec=off))
    )


def test_disruption_budget_only_where_policy_v1_is_served_and_wanted() -> None:
    pdb = by_kind(render(inputs()))[("PodDisruptionBudget", "recs-graph")]
    assert pdb["apiVersion"] == "policy/v1"
    assert pdb["spec"]["maxUnavailable"] == 1
    assert ("PodDisruptionBudget", "recs-graph") not in by_kind(
        render(inputs(disruption_budget=False))
    )
    off = InferenceGraphSpec.model_validate(
        {"modelRepository": {"build": {}}, "disruptionBudget": {"enabled": False}}
    )
    assert ("PodDisruptionBudget", "recs-graph") not in by_kind(render(inputs(spec=off)))
    two = InferenceGraphSpec.model_validate(
        {"modelRepository": {"build": {}}, "disruptionBudget": {"maxUnavailable": 2}}
    )
    assert (
        by_kind(render(inputs(spec=two)))[("PodDisruptionBudget", "recs-graph")]["spec"][
            "maxUnavailable"
        ]
        == 2
    )


def test_graph_config_is_a_valid_graph_config_with_the_stable_versions() -> None:
    children = by_kind(render(inputs()))
    text = children[("ConfigMap", "recs-config")]["data"]["graph.yaml"]
    config = GraphConfig.model_validate(yaml.safe_load(text))
    assert config.model_versions == VERSIONS
    assert config.budgets.total_ms == SPEC.deadline_ms
    assert config.budgets.ranking_ms == SPEC.stages.ranking.budget_ms


def test_canary_becomes_a_router_experiment_with_its_weight() -> None:
    route = CanaryRoute("ranker-dcn", "ranker_dcn", 4, 25)
    children = by_kind(render(inputs(canary=route)))
    catalog = Catalog.model_validate(
        yaml.safe_load(children[("ConfigMap", "recs-router")]["data"]["experiments.yaml"])
    )
    exp = catalog.experiment("canary-ranker-dcn")
    assert [(v.name, v.weight) for v in exp.variants] == [("stable", 75), ("canary", 25)]
    assert exp.variant("canary").config["model_versions"] == {**VERSIONS, "ranker_dcn": 4}
    command = children[("Deployment", "recs-graph")]["spec"]["template"]["spec"]["containers"][0][
        "command"
    ]
    assert command[command.index("--experiment") + 1] == "canary-ranker-dcn"


def test_a_weight_change_restarts_nothing_but_a_new_variant_does() -> None:
    def pod_hash(route: CanaryRoute | None) -> str:
        c = by_kind(render(inputs(canary=route)))
        annotations = c[("Deployment", "recs-graph")]["spec"]["template"]["metadata"]
        return str(annotations["annotations"][CONFIG_HASH])

    at5 = pod_hash(CanaryRoute("ranker-dcn", "ranker_dcn", 4, 5))
    assert pod_hash(CanaryRoute("ranker-dcn", "ranker_dcn", 4, 25)) == at5  # re-read in place
    assert pod_hash(CanaryRoute("ranker-dcn", "ranker_dcn", 5, 25)) != at5  # new variant config
    assert pod_hash(None) != at5  # no experiment served: a different command line


def test_the_spec_experiment_is_served_when_no_canary() -> None:
    exp = Experiment.model_validate(
        {
            "name": "mmr-test",
            "variants": [
                {"name": "control", "weight": 50},
                {"name": "diverse", "weight": 50, "config": {"rerank": {"mmr_lambda": 0.5}}},
            ],
        }
    )
    spec = SPEC.model_copy(update={"experiment": "mmr-test"})
    assert served_experiment(inputs(spec=spec, experiments=(exp,))) == "mmr-test"
    assert served_experiment(inputs(spec=spec)) is None  # not (yet) an Experiment resource
    route = CanaryRoute("combiner", "combiner", 2, 5)
    assert (
        served_experiment(inputs(spec=spec, experiments=(exp,), canary=route)) == "canary-combiner"
    )


def test_repository_sources() -> None:
    def pod(repo: dict[str, Any]) -> dict[str, Any]:
        spec = InferenceGraphSpec.model_validate({"modelRepository": repo})
        deployment = by_kind(render(inputs(spec=spec)))[("Deployment", "recs-triton")]
        pod_spec: dict[str, Any] = deployment["spec"]["template"]["spec"]
        return pod_spec

    pvc = pod({"pvc": "models"})
    assert pvc["initContainers"] == []
    assert pvc["volumes"][0]["persistentVolumeClaim"] == {"claimName": "models", "readOnly": True}
    build = pod({"build": {"dataset": "movielens-100k", "versions": 2}})
    assert (
        "seq 2); do cascade build --dataset movielens-100k"
        in build["initContainers"][0]["command"][2]
    )
    uri = pod({"uri": "https://example.com/repo.tar.gz"})
    assert "https://example.com/repo.tar.gz" in uri["initContainers"][0]["command"]


def test_only_the_model_build_runs_the_factory_image() -> None:
    """torch lives in the factory image; the servers and a repository download need none."""
    for repo, init_image in [
        ({"build": {}}, "cascade-factory:0.1.0"),
        ({"uri": "https://example.com/repo.tar.gz"}, "cascade:0.1.0"),
        ({"pvc": "models"}, None),
    ]:
        spec = InferenceGraphSpec.model_validate({"modelRepository": repo})
        for c in render(inputs(spec=spec)):
            if c["kind"] != "Deployment":
                continue
            pod = c["spec"]["template"]["spec"]
            assert [x["image"] for x in pod["containers"]] == ["cascade:0.1.0"]
            assert [x["image"] for x in pod["initContainers"]] == [init_image] * bool(init_image)


def test_pods_are_hardened() -> None:
    for c in render(inputs()):
        if c["kind"] != "Deployment":
            continue
        pod = c["spec"]["template"]["spec"]
        assert pod["securityContext"]["runAsNonRoot"] is True
        for container in pod["containers"] + pod["initContainers"]:
            sc = container["securityContext"]
            assert sc["readOnlyRootFilesystem"]
            assert sc["capabilities"] == {"drop": ["ALL"]}
            assert container["resources"]["limits"]
            assert container["resources"]["requests"]
        main = pod["containers"][0]
        assert main["readinessProbe"]["httpGet"]["path"] == "/v2/health/ready"
        assert main["livenessProbe"]["httpGet"]["path"] == "/v2/health/live"


def test_replicas_come_from_status_or_the_minimum() -> None:
    deployments = by_kind(render(inputs(replicas={"graph": 3})))
    assert deployments[("Deployment", "recs-graph")]["spec"]["replicas"] == 3
    assert deployments[("Deployment", "recs-triton")]["spec"]["replicas"] == 1


def test_graph_talks_to_its_triton() -> None:
    graph = by_kind(render(inputs()))[("Deployment", "recs-graph")]
    command = graph["spec"]["template"]["spec"]["containers"][0]["command"]
    assert command[command.index("--triton-grpc") + 1] == "recs-triton:8001"
    selector = by_kind(render(inputs()))[("Service", "recs-triton")]["spec"]["selector"]
    triton_labels = by_kind(render(inputs()))[("Deployment", "recs-triton")]["spec"]["template"][
        "metadata"
    ]["labels"]
    assert selector.items() <= triton_labels.items()


def test_both_servers_listen_beyond_loopback() -> None:
    """The Services and probes reach the pod's IP, not 127.0.0.1."""
    children = by_kind(render(inputs()))
    for name in ("recs-graph", "recs-triton"):
        command = children[("Deployment", name)]["spec"]["template"]["spec"]["containers"][0][
            "command"
        ]
        assert command[command.index("--host") + 1] == "0.0.0.0", name


def test_the_graph_runtime_reads_the_canary_split() -> None:
    """The ConfigMaps as the graph pods load them: the canary variant pins the new version."""
    from inference.graph.experiments import ExperimentRouter

    route = CanaryRoute("ranker-dcn", "ranker_dcn", 4, 25)
    children = by_kind(render(inputs(canary=route)))
    base = GraphConfig.model_validate(
        yaml.safe_load(children[("ConfigMap", "recs-config")]["data"]["graph.yaml"])
    )
    catalog = Catalog.model_validate(
        yaml.safe_load(children[("ConfigMap", "recs-router")]["data"]["experiments.yaml"])
    )
    router = ExperimentRouter(catalog, "canary-ranker-dcn", base, None)
    try:
        assert router.configs["stable"].model_versions["ranker_dcn"] == 3
        assert router.configs["canary"].model_versions["ranker_dcn"] == 4
        variants = [router.route(f"user-{i}").variant for i in range(4000)]
    finally:
        router.close()
    share = variants.count("canary") / len(variants)
    assert 0.22 < share < 0.28  # 25 % of users, by the router's hash
