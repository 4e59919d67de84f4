"""The Helm chart, checked offline with real tools: Helm's own lint and render (the SDK, in
process), Kubernetes' published schemas for every built-in kind, and the operator's pydantic
specs for the custom resources. Every ``ci/*-values.yaml`` scenario goes through all of it."""

from __future__ import annotations

import ast
import re
from pathlib import Path
from typing import Any

import helm_python as helm
import jsonschema
import kubernetes_validate
import pytest
import yaml
from pydantic import BaseModel

from inference.graph.settings import GraphSettings
from operators.crds.specs import (
    API_VERSION,
    DNS_1035_PATTERN,
    DNS_LABEL_MAX_LENGTH,
    EXPERIMENT_NAME,
    GRAPH_NAME,
    MODEL_NAME,
    URI_PATTERN,
    ExperimentSpec,
    InferenceGraphSpec,
    ModelSpec,
)
from tests.unit.charts.rendering import (
    CHART,
    NAMESPACE,
    ROOT,
    SCENARIOS,
    Manifest,
    chart,
    count_pod_specs,
    crds,
    notes,
    of_kind,
    one,
    pod_specs,
    render,
    scenario,
    scenario_values,
)

#: The oldest Kubernetes the chart supports (Chart.yaml kubeVersion) and so validates against.
KUBE_VERSION = "1.27"
#: API groups of custom resources: no published schema; checked by the tests below instead.
CUSTOM_GROUPS = {"serving.cascade.dev", "monitoring.coreos.com", "ray.io", "kopf.dev"}
SPECS: dict[str, type[BaseModel]] = {
    "Model": ModelSpec,
    "InferenceGraph": InferenceGraphSpec,
    "Experiment": ExperimentSpec,
}
GRAPH = "recommender"


def group(doc: Manifest) -> str:
    api = str(doc["apiVersion"])
    return api.split("/")[0] if "/" in api else ""


# -- Helm ---------------------------------------------------------------------------------------


def test_chart_metadata() -> None:
    meta = chart().metadata
    assert meta["apiVersion"] == "v2"
    assert (meta["name"], meta["version"], meta["appVersion"]) == ("cascade", "0.1.0", "0.1.0")
    assert meta["kubeVersion"] == ">=1.27.0-0"
    assert KUBE_VERSION in meta["kubeVersion"]


def test_every_scenario_is_tested() -> None:
    """The scenarios the README and the issue name are all there."""
    required = {"default", "pvc", "uri", "rayservice", "monitoring", "namespaced", "kind"}
    assert required <= set(SCENARIOS)


@pytest.mark.parametrize("name", SCENARIOS)
def test_helm_lint_strict(name: str) -> None:
    report = helm.lint(
        CHART,
        scenario_values(name),
        strict=True,
        namespace=NAMESPACE,
        kube_version=f"v{KUBE_VERSION}.0",
    )
    problems = [m for m in report["messages"] if m["severity"] >= 2]  # warnings and errors
    assert not problems, problems
    assert not report["errors"]


@pytest.mark.parametrize("name", SCENARIOS)
def test_builtin_kinds_validate_against_kubernetes(name: str) -> None:
    docs = scenario(name)
    assert docs
    for doc in docs:
        if group(doc) in CUSTOM_GROUPS:
            continue
        where = f"{doc['kind']}/{doc['metadata']['name']}"
        try:
            kubernetes_validate.validate(doc, KUBE_VERSION, strict=True)
        except kubernetes_validate.ValidationError as exc:
            path = ".".join(str(p) for p in exc.path)
            pytest.fail(f"{name}: {where}: {path}: {exc.message}")
        except kubernetes_validate.SchemaNotFoundError as exc:
            pytest.fail(f"{name}: {where}: {exc.message}")


def test_crds_validate_and_cover_every_custom_kind() -> None:
    definitions = crds()
    for crd in definitions:
        kubernetes_validate.validate(crd, KUBE_VERSION, strict=True)
    kinds = {(c["spec"]["group"], c["spec"]["names"]["kind"]): c for c in definitions}
    assert set(kinds) == {
        ("serving.cascade.dev", "Model"),
        ("serving.cascade.dev", "InferenceGraph"),
        ("serving.cascade.dev", "Experiment"),
        ("kopf.dev", "KopfPeering"),
        ("kopf.dev", "ClusterKopfPeering"),
    }
    assert kinds[("kopf.dev", "ClusterKopfPeering")]["spec"]["scope"] == "Cluster"
    assert kinds[("kopf.dev", "KopfPeering")]["spec"]["scope"] == "Namespaced"
    for kind in ("KopfPeering", "ClusterKopfPeering"):
        schema = kinds[("kopf.dev", kind)]["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
        status = schema["properties"]["status"]
        assert status == {"type": "object", "x-kubernetes-preserve-unknown-fields": True}


def test_crds_are_the_generated_ones() -> None:
    """The serving CRDs come from ``python -m operators.crds.schema``; none is edited by hand."""
    from operators.crds.schema import crd_manifests

    shipped = {Path(e["name"]).name: e["data"] for e in chart().crds}
    assert shipped.pop("kopf-peering.yaml")
    assert shipped == crd_manifests()


# -- custom resources -----------------------------------------------------------------------


def validate_custom_resource(doc: Manifest) -> BaseModel:
    """The resource's spec through the operator's own model, as the operator will read it."""
    assert doc["apiVersion"] == API_VERSION
    spec = SPECS[doc["kind"]].model_validate(doc["spec"])
    if isinstance(spec, ExperimentSpec):
        spec.design(doc["metadata"]["name"])  # cross-field rules: weights, allow-list
    return spec


@pytest.mark.parametrize("name", SCENARIOS)
def test_custom_resources_match_the_operator_specs(name: str) -> None:
    docs = scenario(name)
    resources = [d for d in docs if group(d) == "serving.cascade.dev"]
    specs = {(d["kind"], d["metadata"]["name"]): validate_custom_resource(d) for d in resources}
    values = scenario_values(name)
    if values.get("graph", {}).get("enabled", True) is False:
        assert not specs
        return
    graph = specs.pop(("InferenceGraph", GRAPH))
    assert isinstance(graph, InferenceGraphSpec)
    models = {n: s for (kind, n), s in specs.items() if kind == "Model"}
    assert sorted(models) == sorted(graph.model_names)
    repository = graph.model_repository
    for name, model in models.items():
        assert isinstance(model, ModelSpec)
        directory = name.replace("-", "_")  # the model's directory in the repository
        if repository.pvc is not None:
            assert model.storage_uri == f"pvc://{repository.pvc}/{directory}"
        elif repository.uri is not None:
            assert model.storage_uri == repository.uri
        else:
            assert model.storage_uri == f"file:///models/{directory}"
    experiments = {n: s for (kind, n), s in specs.items() if kind == "Experiment"}
    assert set(experiments) == ({graph.experiment} if graph.experiment else set())
    for experiment in experiments.values():
        assert isinstance(experiment, ExperimentSpec)
        assert experiment.graph == GRAPH


def _crd_schemas() -> dict[str, dict[str, Any]]:
    return {
        c["spec"]["names"]["kind"]: c["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
        for c in crds()
        if c["spec"]["group"] == "serving.cascade.dev"
    }


@pytest.mark.parametrize("name", SCENARIOS)
def test_custom_resources_validate_against_the_crds(name: str) -> None:
    """What the API server checks before the operator sees anything: the CRD's schema,
    ``metadata.name`` included (draft 4, as OpenAPI v3; CEL rules are checked in the operator
    tests)."""
    schemas = _crd_schemas()
    for doc in scenario(name):
        if group(doc) != "serving.cascade.dev":
            continue
        try:
            jsonschema.Draft4Validator(schemas[doc["kind"]]).validate(doc)
        except jsonschema.ValidationError as exc:
            at = ".".join(str(p) for p in exc.path)
            pytest.fail(f"{name}: {doc['kind']}/{doc['metadata']['name']}: {at}: {exc.message}")


def test_the_quickstart_graph_builds_its_models() -> None:
    graph = one(scenario("default"), "InferenceGraph", GRAPH)
    assert graph["spec"]["modelRepository"] == {
        "build": {"dataset": "movielens-100k", "versions": 1}
    }
    models = of_kind(scenario("default"), "Model")
    assert [m["metadata"]["name"] for m in models] == [
        "user-tower",
        "ranker-dcn",
        "ranker-mlp",
        "combiner",
    ]


def test_model_versions_and_canary_come_from_values() -> None:
    models = {m["metadata"]["name"]: m["spec"] for m in of_kind(scenario("pvc"), "Model")}
    assert {n: s["version"] for n, s in models.items()} == {
        "user-tower": 2,
        "ranker-dcn": 2,
        "ranker-mlp": 2,
        "combiner": 1,
    }
    assert models["user-tower"]["canary"]["steps"] == [10, 50, 100]
    assert "enabled" not in models["user-tower"]["canary"]


def test_podmonitor_replaces_the_operators_graph_servicemonitor() -> None:
    """One scrape per pod: the chart's PodMonitor or the operator's ServiceMonitor, not both."""
    with_podmonitor = one(scenario("monitoring"), "InferenceGraph")["spec"]["monitoring"]
    without = one(scenario("default"), "InferenceGraph")["spec"]["monitoring"]
    assert with_podmonitor == {"serviceMonitor": False}
    assert without == {"serviceMonitor": True}


EXAMPLES = sorted(p for p in (ROOT / "examples").rglob("*") if p.suffix in (".yaml", ".yml"))


@pytest.mark.parametrize("path", EXAMPLES, ids=[p.relative_to(ROOT).as_posix() for p in EXAMPLES])
def test_example_resources_match_the_operator_specs(path: Path) -> None:
    docs = [d for d in yaml.safe_load_all(path.read_text()) if d]
    for doc in docs:
        if doc.get("kind") in SPECS and group(doc) == "serving.cascade.dev":
            validate_custom_resource(doc)


# -- security -------------------------------------------------------------------------------


def check_pod(where: str, spec: dict[str, Any], long_running: bool) -> None:
    pod = spec.get("securityContext", {})
    assert pod.get("runAsNonRoot") is True, where
    assert pod.get("runAsUser", 0) >= 1, where
    assert pod.get("seccompProfile", {}).get("type") == "RuntimeDefault", where
    for flag in ("hostNetwork", "hostPID", "hostIPC"):
        assert not spec.get(flag), f"{where}: {flag}"
    mounts_tmp = {v["name"] for v in spec.get("volumes", []) if "emptyDir" in v}
    containers = [(c, False) for c in spec.get("initContainers", [])]
    containers += [(c, True) for c in spec["containers"]]
    for container, serving in containers:
        at = f"{where}/{container['name']}"
        sc = container.get("securityContext", {})
        assert sc.get("readOnlyRootFilesystem") is True, at
        assert sc.get("allowPrivilegeEscalation") is False, at
        assert not sc.get("privileged"), at
        assert "ALL" in sc.get("capabilities", {}).get("drop", []), at
        assert not sc.get("capabilities", {}).get("add"), at
        assert sc.get("runAsNonRoot", pod.get("runAsNonRoot")) is True, at
        assert sc.get("runAsUser", pod.get("runAsUser", 0)) >= 1, at
        tmp = [m for m in container.get("volumeMounts", []) if m["mountPath"] == "/tmp"]
        assert tmp, f"{at}: no writable /tmp"
        assert tmp[0]["name"] in mounts_tmp, f"{at}: /tmp is not an emptyDir"
        resources = container.get("resources", {})
        for bound in ("requests", "limits"):
            assert {"cpu", "memory"} <= set(resources.get(bound, {})), f"{at}: {bound}"
        if serving and long_running:
            assert "livenessProbe" in container, f"{at}: livenessProbe"
            assert "readinessProbe" in container, f"{at}: readinessProbe"


@pytest.mark.parametrize("name", SCENARIOS)
def test_every_pod_has_secure_defaults(name: str) -> None:
    docs = scenario(name)
    checked = 0
    for doc in docs:
        specs = list(pod_specs(doc))
        assert len(specs) == count_pod_specs(doc), f"unchecked pod spec in {doc['kind']}"
        hook = doc["metadata"].get("annotations", {}).get("helm.sh/hook")
        for where, spec in specs:
            check_pod(where, spec, long_running=hook != "test")
            checked += 1
    assert checked >= 1


def test_an_insecure_pod_is_caught() -> None:
    docs = render({"securityContext": {"readOnlyRootFilesystem": False}})
    deployment = one(docs, "Deployment")
    ((where, spec),) = pod_specs(deployment)
    with pytest.raises(AssertionError, match="operator"):
        check_pod(where, spec, long_running=True)


#: The operator's permissions, and not one more: (API group, resource, verb).
NAMESPACED_RULES = {
    *{
        ("serving.cascade.dev", r, v)
        for r in ("models", "inferencegraphs", "experiments")
        for v in ("get", "list", "watch", "patch", "update")
    },
    *{
        ("serving.cascade.dev", f"{r}/status", v)
        for r in ("models", "inferencegraphs", "experiments")
        for v in ("get", "patch", "update")
    },
    *{
        (g, r, v)
        for g, r in (
            ("apps", "deployments"),
            ("", "services"),
            ("", "configmaps"),
            ("policy", "poddisruptionbudgets"),
            ("monitoring.coreos.com", "servicemonitors"),
        )
        for v in ("get", "list", "watch", "create", "patch", "update", "delete")
    },
    *{(g, "events", v) for g in ("", "events.k8s.io") for v in ("create", "patch")},
    *{("kopf.dev", "kopfpeerings", v) for v in ("get", "list", "watch", "patch")},
}
CLUSTER_READ_RULES = {
    *{("apiextensions.k8s.io", "customresourcedefinitions", v) for v in ("get", "list", "watch")},
    *{("", "namespaces", v) for v in ("get", "list", "watch")},
}
CLUSTER_PEERING_RULES = {
    ("kopf.dev", "clusterkopfpeerings", v) for v in ("get", "list", "watch", "patch")
}


def permissions(role: Manifest) -> set[tuple[str, str, str]]:
    granted: set[tuple[str, str, str]] = set()
    for rule in role["rules"]:
        assert set(rule) <= {"apiGroups", "resources", "verbs"}, rule  # no URLs, no names
        for field in ("apiGroups", "resources", "verbs"):
            assert not any("*" in item for item in rule[field]), f"wildcard in {rule}"
        granted |= {
            (g, r, v) for g in rule["apiGroups"] for r in rule["resources"] for v in rule["verbs"]
        }
    return granted


def check_binding(docs: list[Manifest], binding: Manifest, role: Manifest) -> None:
    account = one(docs, "ServiceAccount")
    assert binding["roleRef"] == {
        "apiGroup": "rbac.authorization.k8s.io",
        "kind": role["kind"],
        "name": role["metadata"]["name"],
    }
    assert binding["subjects"] == [
        {"kind": "ServiceAccount", "name": account["metadata"]["name"], "namespace": NAMESPACE}
    ]
    deployment = one(docs, "Deployment")
    assert (
        deployment["spec"]["template"]["spec"]["serviceAccountName"]
        == (account["metadata"]["name"])
    )


def test_rbac_cluster_wide_is_exactly_the_operators_needs() -> None:
    docs = scenario("default")
    assert not of_kind(docs, "Role")
    role = one(docs, "ClusterRole")
    assert permissions(role) == NAMESPACED_RULES | CLUSTER_PEERING_RULES | CLUSTER_READ_RULES
    check_binding(docs, one(docs, "ClusterRoleBinding"), role)


def test_rbac_namespaced_uses_a_role_in_the_watched_namespace() -> None:
    docs = scenario("namespaced")
    role = one(docs, "Role")
    assert role["metadata"]["namespace"] == "cascade"
    assert permissions(role) == NAMESPACED_RULES
    check_binding(docs, one(docs, "RoleBinding"), role)
    # CRDs and namespaces are cluster-scoped: only read access, and nothing else, cluster-wide.
    discovery = one(docs, "ClusterRole")
    assert permissions(discovery) == CLUSTER_READ_RULES
    check_binding(docs, one(docs, "ClusterRoleBinding"), discovery)


def test_a_wildcard_is_caught() -> None:
    role = {"rules": [{"apiGroups": [""], "resources": ["*"], "verbs": ["get"]}]}
    with pytest.raises(AssertionError, match="wildcard"):
        permissions(role)


@pytest.mark.parametrize("name", SCENARIOS)
def test_network_policies_never_admit_everyone(name: str) -> None:
    """An ingress rule with no ``from`` admits every source: each rule must name its peers."""
    for policy in of_kind(scenario(name), "NetworkPolicy"):
        assert policy["spec"]["policyTypes"] == ["Ingress"]
        for rule in policy["spec"]["ingress"]:
            assert rule.get("from"), f"{policy['metadata']['name']}: {rule}"
            # Every port only among a Ray cluster's own pods (Ray's ports are dynamic).
            ray_only = rule["from"] == [
                {"podSelector": {"matchLabels": {**RAY_LABELS, GRAPH_LABEL: GRAPH}}}
            ]
            assert rule.get("ports") or ray_only, f"{policy['metadata']['name']}: {rule}"


RAY_LABELS = {"app.kubernetes.io/component": "ray"}
GRAPH_LABEL = "serving.cascade.dev/graph"


@pytest.mark.parametrize("name", SCENARIOS)
def test_every_pod_the_chart_creates_is_behind_a_network_policy(name: str) -> None:
    """On by default: each pod template's labels are selected by one of the policies."""
    docs = scenario(name)
    selectors = [p["spec"]["podSelector"]["matchLabels"] for p in of_kind(docs, "NetworkPolicy")]
    templates = [
        d["spec"]["template"]["metadata"]["labels"]
        for d in docs
        if d["kind"] in ("Deployment", "StatefulSet", "DaemonSet")
    ]
    for service in of_kind(docs, "RayService"):
        cluster = service["spec"]["rayClusterConfig"]
        templates.append(cluster["headGroupSpec"]["template"]["metadata"]["labels"])
        templates += [g["template"]["metadata"]["labels"] for g in cluster["workerGroupSpecs"]]
    for labels in templates:
        assert any(selector.items() <= labels.items() for selector in selectors), labels


def test_the_ray_dashboard_is_reachable_only_from_kuberay() -> None:
    docs = scenario("rayservice")
    ray = one(docs, "NetworkPolicy", f"{GRAPH}-ray")["spec"]
    dashboard = [
        r for r in ray["ingress"] if {"port": 8265, "protocol": "TCP"} in r.get("ports", [])
    ]
    assert [r["from"] for r in dashboard] == [
        [{"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "kuberay-system"}}}]
    ]


def test_network_policies_fence_the_graph_and_triton() -> None:
    docs = scenario("monitoring")
    graph = one(docs, "NetworkPolicy", f"{GRAPH}-graph")["spec"]
    assert graph["podSelector"]["matchLabels"]["app.kubernetes.io/component"] == "graph"
    assert {p["port"] for p in graph["ingress"][0]["ports"]} == {8000, 9000}
    peers = graph["ingress"][0]["from"]
    assert {"podSelector": {}} in peers
    namespaces = [p["namespaceSelector"]["matchLabels"] for p in peers if "namespaceSelector" in p]
    assert {"kubernetes.io/metadata.name": "frontend"} in namespaces
    assert {"kubernetes.io/metadata.name": "monitoring"} in namespaces
    triton = one(docs, "NetworkPolicy", f"{GRAPH}-triton")["spec"]
    callers, metrics = triton["ingress"]
    assert callers["from"][0]["podSelector"]["matchExpressions"][0]["values"] == ["graph"]
    assert {p["port"] for p in callers["ports"]} == {8000, 8001}
    assert [p["port"] for p in metrics["ports"]] == [8002]


# -- the operator ---------------------------------------------------------------------------


def operator_args(docs: list[Manifest]) -> list[str]:
    container = one(docs, "Deployment")["spec"]["template"]["spec"]["containers"][0]
    assert container["command"] == ["cascade", "operator"]
    return list(container["args"])


def test_operator_command_line() -> None:
    args = operator_args(scenario("default"))
    assert args == [
        "--peering",
        "cascade",
        "--all-namespaces",
        "--metrics-port",
        "8080",
        "--liveness-port",
        "8081",
        "--prometheus-url",
        "http://prometheus-operated.monitoring.svc:9090",
        "--image",
        "cascade:0.1.0",
        "--factory-image",
        "cascade-factory:0.1.0",
    ]
    namespaced = operator_args(scenario("namespaced"))
    assert namespaced[namespaced.index("--namespace") + 1] == "cascade"
    assert "--all-namespaces" not in namespaced
    uri = operator_args(scenario("uri"))
    assert uri[uri.index("--image") + 1] == "registry.example.com/cascade:0.1.0"
    digest = scenario_values("uri")["image"]["factory"]["digest"]
    assert uri[uri.index("--factory-image") + 1] == f"registry.example.com/cascade-factory@{digest}"


def test_the_serving_image_runs_everything_but_the_model_build() -> None:
    """The serving image has no torch: the operator, the graph, Triton and the helm test run it;
    the factory image runs only `cascade build` (the operator's --factory-image, and the Ray
    pods' init container)."""
    docs = render(
        {
            "image": {"tag": "1.2.3", "factory": {"tag": "1.2.4"}},
            "rayService": {"enabled": True},
        }
    )
    serving, factory = "cascade:1.2.3", "cascade-factory:1.2.4"
    operator = one(docs, "Deployment")["spec"]["template"]["spec"]["containers"][0]
    assert operator["image"] == serving
    args = operator["args"]
    assert args[args.index("--image") + 1] == serving
    assert args[args.index("--factory-image") + 1] == factory
    assert {c["image"] for c in one(docs, "Pod")["spec"]["containers"]} == {serving}
    cluster = one(docs, "RayService")["spec"]["rayClusterConfig"]
    for group in [cluster["headGroupSpec"], *cluster["workerGroupSpecs"]]:
        pod = group["template"]["spec"]
        assert {c["image"] for c in pod["containers"]} == {serving}
        builds = [c for c in pod["initContainers"] if "build" in " ".join(c["command"])]
        assert builds
        assert {c["image"] for c in builds} == {factory}


def test_operator_probes_and_metrics_service() -> None:
    docs = scenario("default")
    container = one(docs, "Deployment")["spec"]["template"]["spec"]["containers"][0]
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert ports == {"metrics": 8080, "health": 8081}
    assert container["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "health"}
    service = one(docs, "Service")
    assert service["spec"]["ports"] == [
        {"name": "metrics", "port": 8080, "targetPort": "metrics", "protocol": "TCP"}
    ]
    selector = one(docs, "Deployment")["spec"]["selector"]["matchLabels"]
    assert service["spec"]["selector"] == selector


def test_peering_object_and_disruption_budget() -> None:
    single = scenario("default")
    assert one(single, "ClusterKopfPeering")["metadata"]["name"] == "cascade"
    assert not of_kind(single, "PodDisruptionBudget")
    pair = scenario("monitoring")
    assert one(pair, "Deployment")["spec"]["replicas"] == 2
    assert one(pair, "PodDisruptionBudget")["spec"]["minAvailable"] == 1
    namespaced = one(scenario("namespaced"), "KopfPeering")
    assert namespaced["metadata"]["namespace"] == "cascade"
    standalone = render({"operator": {"peering": {"enabled": False}}})
    assert not of_kind(standalone, "ClusterKopfPeering")
    assert "--peering" not in operator_args(standalone)
    assert "--standalone" in operator_args(standalone)
    forced = render({"operator": {"replicas": 3, "peering": {"enabled": False}}})
    assert of_kind(forced, "ClusterKopfPeering")
    assert "--peering" in operator_args(forced)
    assert "--standalone" not in operator_args(forced)


def test_the_disruption_budget_can_be_left_out() -> None:
    """policy/v1 needs Kubernetes >= 1.21; the e2e tests run a 1.20 API server."""
    values = {"operator": {"replicas": 2, "podDisruptionBudget": {"enabled": False}}}
    docs = render(values)
    assert one(docs, "Deployment")["spec"]["replicas"] == 2
    assert not of_kind(docs, "PodDisruptionBudget")


#: What a Kubernetes 1.20 API server serves of the built-in groups the chart uses.
KUBE_1_20_APIS = {
    "v1",
    "apps/v1",
    "rbac.authorization.k8s.io/v1",
    "networking.k8s.io/v1",
    "apiextensions.k8s.io/v1",
    "policy/v1beta1",
}


def test_a_kube_1_20_install_uses_only_apis_it_serves() -> None:
    """Every optional piece on, the disruption budget off: nothing built-in that 1.20 lacks."""
    values = scenario_values("monitoring")
    values["operator"]["podDisruptionBudget"] = {"enabled": False}
    docs = render(values) + crds()
    assert of_kind(docs, "NetworkPolicy")
    assert of_kind(docs, "ConfigMap")  # the dashboards
    served = {d["apiVersion"] for d in docs if group(d) not in CUSTOM_GROUPS}
    assert served <= KUBE_1_20_APIS, served - KUBE_1_20_APIS


# -- the graph's children -------------------------------------------------------------------

GRAPH_POD_LABELS = {
    "app.kubernetes.io/name": "cascade",
    "app.kubernetes.io/instance": GRAPH,
    "app.kubernetes.io/component": "graph",
    "app.kubernetes.io/managed-by": "cascade-operator",
    "serving.cascade.dev/graph": GRAPH,
}


def test_nodeport_service_selects_the_graph_pods() -> None:
    assert not [s for s in of_kind(scenario("default"), "Service") if "nodeport" in str(s)]
    service = one(scenario("kind"), "Service", f"{GRAPH}-nodeport")
    assert service["spec"]["type"] == "NodePort"
    assert service["spec"]["selector"] == GRAPH_POD_LABELS
    assert service["spec"]["ports"][0]["nodePort"] == 30080
    assert service["spec"]["ports"][0]["targetPort"] == 8000


def test_helm_test_sends_one_recommendation() -> None:
    docs = scenario("default")
    pod = one(docs, "Pod")
    assert pod["metadata"]["annotations"]["helm.sh/hook"] == "test"
    assert pod["spec"]["restartPolicy"] == "Never"
    container = pod["spec"]["containers"][0]
    env = {e["name"]: e["value"] for e in container["env"]}
    assert env["GRAPH_URL"] == f"http://{GRAPH}-graph:8000/v1/recommend"
    assert container["command"][:2] == ["python", "-c"]
    script = container["command"][2]
    ast.parse(script)
    assert 'json.dumps({"user_id": "1", "k": 5})' in script
    assert "status != 200" in script
    assert (
        container["image"]
        == one(docs, "Deployment")["spec"]["template"]["spec"]["containers"][0]["image"]
    )
    assert not of_kind(scenario("namespaced"), "Pod")  # tests.enabled: false


def test_notes_show_how_to_reach_the_graph() -> None:
    text = notes(scenario_values("kind"))
    assert f"port-forward svc/{GRAPH}-graph 8000:8000" in text
    assert "/v1/recommend" in text
    assert "localhost:8080" in text
    assert "localhost:3000" in text


def test_claim_the_chart_creates() -> None:
    docs = scenario("pvc-create")
    claim = one(docs, "PersistentVolumeClaim")
    assert claim["metadata"]["name"] == "cascade-models"
    assert claim["spec"]["accessModes"] == ["ReadWriteMany"]
    graph = one(docs, "InferenceGraph")
    assert graph["spec"]["modelRepository"] == {"pvc": "cascade-models"}
    assert not of_kind(scenario("pvc"), "PersistentVolumeClaim")  # an existing claim


# -- KubeRay --------------------------------------------------------------------------------


def test_rayservice_runs_the_graph_application() -> None:
    docs = scenario("rayservice")
    service = one(docs, "RayService")
    assert service["apiVersion"] == "ray.io/v1"
    spec = service["spec"]
    serve = yaml.safe_load(spec["serveConfigV2"])
    assert serve["http_options"]["port"] == 8000
    assert serve["grpc_options"]["port"] == 9000
    (app,) = serve["applications"]
    module, _, function = app["import_path"].partition(":")
    source = ROOT / Path(*module.split(".")).with_suffix(".py")
    tree = ast.parse(source.read_text())
    builders = [n for n in tree.body if isinstance(n, ast.FunctionDef) and n.name == function]
    assert builders, f"{app['import_path']}: no such function"
    assert len(builders[0].args.args) == 1  # Ray Serve calls a builder with its args
    settings = GraphSettings.model_validate(app["args"])
    assert settings.triton_grpc == f"{GRAPH}-triton:8001"
    assert settings.graph.budgets.total_ms == 50
    image = one(docs, "Deployment")["spec"]["template"]["spec"]["containers"][0]["image"]
    cluster = spec["rayClusterConfig"]
    groups = [cluster["headGroupSpec"], *cluster["workerGroupSpecs"]]
    assert [g.get("groupName", "head") for g in groups] == ["head", "workers"]
    assert cluster["workerGroupSpecs"][0]["replicas"] == 2
    for ray_group in groups:
        pod = ray_group["template"]["spec"]
        assert {c["image"] for c in pod["containers"]} == {image}
        volumes = {v["name"]: v for v in pod["volumes"]}
        assert volumes["models"]["persistentVolumeClaim"]["claimName"] == "cascade-models"
        ports = {p["name"]: p["containerPort"] for p in pod["containers"][0]["ports"]}
        assert ports["serve"] == 8000
    test = one(docs, "Pod")["spec"]["containers"][0]["env"][0]["value"]
    assert test == f"http://{GRAPH}-ray-serve-svc:8000/v1/recommend"


def test_rayservice_builds_models_in_an_init_container() -> None:
    docs = render({"rayService": {"enabled": True}})
    head = one(docs, "RayService")["spec"]["rayClusterConfig"]["headGroupSpec"]
    (init,) = head["template"]["spec"]["initContainers"]
    assert init["command"] == [
        "cascade",
        "build",
        "--dataset",
        "movielens-100k",
        "--out",
        "/models",
    ]
    twice = {"enabled": True}, {"modelRepository": {"build": {"versions": 2}}}
    docs = render({"rayService": twice[0], "graph": twice[1]})
    head = one(docs, "RayService")["spec"]["rayClusterConfig"]["headGroupSpec"]
    (init,) = head["template"]["spec"]["initContainers"]
    assert init["command"][:2] == ["sh", "-c"]
    assert "$(seq 2)" in init["command"][2]


# -- values and their schema ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("values", "expected"),
    [
        ({"operator": {"replicass": 2}}, r"/operator.*replicass"),
        ({"operator": {"replicas": "two"}}, r"/operator/replicas.*want integer"),
        ({"graph": {"modelRepository": {"source": "nfs"}}}, r"/graph/modelRepository/source"),
        ({"podSecurityContext": {"runAsUser": 0}}, r"/podSecurityContext/runAsUser"),
        ({"graph": {"nodePort": 80}}, r"/graph/nodePort"),
        ({"tests": {"resources": {"limits": {"gpu": 1}}}}, r"/tests/resources/limits.*gpu"),
        ({"graph": {"name": "2024-recs"}}, r"/graph/name"),
        ({"graph": {"name": "g" * (GRAPH_NAME.max_length + 1)}}, r"/graph/name"),
        ({"graph": {"modelRepository": {"uri": "s3://b/m.tgz"}}}, r"/graph/modelRepository/uri"),
        ({"graph": {"modelRepository": {"uri": "gs://b/m.tgz"}}}, r"/graph/modelRepository/uri"),
        ({"graph": {"stages": {"ranking": {"combiner": "a--b"}}}}, r"/graph/stages/ranking"),
        ({"operator": {"podDisruptionBudget": {"enable": False}}}, r"/operator/podDisruption"),
    ],
    ids=[
        "typo",
        "wrong-type",
        "enum",
        "root-user",
        "nodeport-range",
        "nested-definition",
        "graph-name-digit",
        "graph-name-long",
        "uri-s3",
        "uri-gs",
        "model-name",
        "pdb-typo",
    ],
)
def test_schema_rejects_bad_values_naming_them(values: dict[str, Any], expected: str) -> None:
    with pytest.raises(helm.HelmValuesError, match=expected):
        render(values)
    report = helm.lint(CHART, values, strict=True)
    assert any(re.search(expected, error) for error in report["errors"]), report["errors"]


@pytest.mark.parametrize(
    ("values", "expected"),
    [
        ({"graph": {"modelRepository": {"source": "pvc"}}}, "graph.modelRepository.pvc.claimName"),
        ({"graph": {"modelRepository": {"source": "uri"}}}, "graph.modelRepository.uri"),
        (
            {
                "rayService": {"enabled": True},
                "graph": {"modelRepository": {"source": "uri", "uri": "https://b/m.tgz"}},
            },
            "rayService.enabled",
        ),
    ],
    ids=["pvc-without-claim", "uri-without-uri", "rayservice-from-uri"],
)
def test_inconsistent_values_fail_with_a_message(values: dict[str, Any], expected: str) -> None:
    with pytest.raises(helm.HelmRenderError, match=re.escape(expected)):
        render(values)


@pytest.mark.parametrize(
    ("values", "path"),
    [
        ({"graph": {"autoscaling": {"graph": {"minReplicas": 9, "maxReplicas": 2}}}}, "graph"),
        ({"graph": {"autoscaling": {"triton": {"minReplicas": 5, "maxReplicas": 4}}}}, "triton"),
        (
            {
                "rayService": {"enabled": True, "worker": {"minReplicas": 9, "maxReplicas": 2}},
                "graph": {"modelRepository": {"source": "build"}},
            },
            "worker",
        ),
    ],
    ids=["graph", "triton", "ray-worker"],
)
def test_min_replicas_above_max_fails_naming_both(values: dict[str, Any], path: str) -> None:
    """JSON Schema cannot compare two values; the templates do, before anything is applied."""
    prefix = {"graph": "graph.autoscaling.graph", "triton": "graph.autoscaling.triton"}.get(
        path, "rayService.worker"
    )
    with pytest.raises(helm.HelmRenderError) as err:
        render(values)
    assert f"{prefix}.minReplicas (" in str(err.value)
    assert f"must not exceed {prefix}.maxReplicas (" in str(err.value)


def replica_pairs(node: Any, path: str = "") -> set[str]:
    """Dotted paths of the maps in the values that hold both minReplicas and maxReplicas."""
    if not isinstance(node, dict):
        return set()
    found = {path} if {"minReplicas", "maxReplicas"} <= set(node) else set()
    for key, child in node.items():
        found |= replica_pairs(child, f"{path}.{key}" if path else key)
    return found


def test_every_min_max_replica_pair_in_the_values_is_checked() -> None:
    """A new pair in values.yaml needs a cascade.checkReplicaBounds call in a template."""
    templates = "".join(p.read_text() for p in (CHART / "templates").rglob("*.yaml"))
    checked = set(
        re.findall(
            r'include "cascade\.checkReplicaBounds" \(dict "bounds" \S+ "path" "([\w.]+)"\)',
            templates,
        )
    )
    assert replica_pairs(chart().values) == checked
    assert checked == {"graph.autoscaling.graph", "graph.autoscaling.triton", "rayService.worker"}


def test_equal_replica_bounds_render() -> None:
    bounds = {"minReplicas": 3, "maxReplicas": 3}
    graph = one(render({"graph": {"autoscaling": {"graph": bounds}}}), "InferenceGraph")
    assert graph["spec"]["autoscaling"]["graph"] == bounds


def _value_schema(*path: str) -> dict[str, Any]:
    schema: Any = chart().schema
    for key in path:
        schema = schema["properties"][key] if key != "[]" else schema["items"]
    assert isinstance(schema, dict)
    return schema


def test_values_schema_carries_the_operators_name_rules() -> None:
    """values.schema.json is a committed file: it must say what operators/crds/specs.py says."""
    name = _value_schema("graph", "name")
    assert (name["pattern"], name["maxLength"]) == (GRAPH_NAME.pattern, GRAPH_NAME.max_length)
    for path in (
        ("graph", "stages", "retrieval", "model"),
        ("graph", "stages", "ranking", "models", "[]"),
        ("graph", "stages", "ranking", "combiner"),
    ):
        model = _value_schema(*path)
        assert (model["pattern"], model["maxLength"]) == (
            MODEL_NAME.pattern,
            MODEL_NAME.max_length,
        ), path
    experiment = _value_schema("experiment", "name")
    assert (experiment["pattern"], experiment["maxLength"]) == (
        EXPERIMENT_NAME.pattern,
        EXPERIMENT_NAME.max_length,
    )
    uri = _value_schema("graph", "modelRepository", "uri")
    assert uri["pattern"] == f"^$|{URI_PATTERN}"


def test_the_longest_graph_name_gives_valid_names() -> None:
    """Every object named after the graph, the chart's NodePort Service included, fits."""
    longest = "g" * GRAPH_NAME.max_length
    values = {**scenario_values("monitoring"), "graph": {"name": longest, "nodePort": 30080}}
    docs = render(values)
    derived = [d for d in docs if d["metadata"]["name"].startswith(longest)]
    assert {d["kind"] for d in derived} >= {"InferenceGraph", "Service", "NetworkPolicy"}
    for doc in derived:
        name = doc["metadata"]["name"]
        assert len(name) <= DNS_LABEL_MAX_LENGTH, name
        assert re.fullmatch(DNS_1035_PATTERN, name), name
    schemas = _crd_schemas()
    jsonschema.Draft4Validator(schemas["InferenceGraph"]).validate(one(docs, "InferenceGraph"))


#: Objects the schema leaves open on purpose: each is checked where it is consumed.
FREE_FORM = {
    "global",  # Helm's values shared with parent charts
    "experiment.variants[].config",  # graph settings overrides, checked by the graph's router
    "definitions.affinity.nodeAffinity",  # core/v1 types, checked by the API server
    "definitions.affinity.podAffinity",
    "definitions.affinity.podAntiAffinity",
}


def open_objects(node: dict[str, Any], path: str) -> list[str]:
    """Paths of object schemas that accept keys nobody declared."""
    found: list[str] = []
    if node.get("type") == "object" or "properties" in node:
        extra = node.get("additionalProperties", True)
        if "properties" in node and extra is not False:
            found.append(path)
        if "properties" not in node and extra is True and path not in FREE_FORM:
            found.append(path)
        if isinstance(extra, dict):
            found += open_objects(extra, f"{path}{{}}")
    for key, child in node.get("properties", {}).items():
        found += open_objects(child, f"{path}.{key}" if path else key)
    if isinstance(node.get("items"), dict):
        found += open_objects(node["items"], f"{path}[]")
    for key, child in node.get("definitions", {}).items():
        found += open_objects(child, f"definitions.{key}")
    return found


def test_an_open_object_is_caught() -> None:
    schema = {"type": "object", "properties": {"a": {"type": "object", "properties": {}}}}
    assert open_objects(schema, "") == ["", "a"]


def test_schema_is_strict_at_every_level() -> None:
    schema = chart().schema
    assert schema is not None
    assert schema["additionalProperties"] is False
    assert open_objects(schema, "") == []


def test_values_lead_with_the_schema_modeline() -> None:
    first = (CHART / "values.yaml").read_text().splitlines()[0]
    assert first == "# yaml-language-server: $schema=values.schema.json"


def leaves(node: Any, prefix: str = "") -> set[str]:
    """Dotted paths of every value a user sets (a list or an empty map is one value)."""
    if isinstance(node, dict) and node:
        return {p for k, v in node.items() for p in leaves(v, f"{prefix}{k}.")}
    return {prefix.removesuffix(".")}


def documented() -> set[str]:
    text = (CHART / "values.yaml").read_text()
    return set(re.findall(r"^\s*## @param (\S+) ", text, re.M))


def test_every_value_is_documented() -> None:
    assert leaves(chart().values) == documented()


def test_the_values_graph_defaults_are_the_data_planes() -> None:
    """Helm values cannot import the schema, so the one place they restate it is checked."""
    from contract.graph_config import GraphConfig

    graph = yaml.safe_load((CHART / "values.yaml").read_text())["graph"]
    stages, defaults = graph["stages"], GraphConfig()
    assert graph["deadlineMs"] == defaults.budgets.total_ms
    assert stages["retrieval"]["budgetMs"] == defaults.budgets.retrieval_ms
    assert stages["retrieval"]["candidates"] == defaults.candidates
    assert stages["ranking"]["budgetMs"] == defaults.budgets.ranking_ms
    assert stages["rerank"]["budgetMs"] == defaults.budgets.rerank_ms
    assert stages["rerank"]["mmrLambda"] == defaults.rerank.mmr_lambda
    assert stages["similar"]["budgetMs"] == defaults.budgets.similar_ms
    assert stages["similar"]["candidates"] == defaults.similar_candidates
