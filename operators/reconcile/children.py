"""The objects an ``InferenceGraph`` owns, rendered as plain manifests.

One pure function, :func:`render`, maps the graph's spec and what the operator knows (stable
model versions, the canary in flight, the experiments, replica counts) to the full list of
children. Applying that list is idempotent, so every reconcile simply renders and applies;
owner references make the garbage collector delete the children with the graph.

The graph's pods read two ConfigMaps: ``<g>-config`` (budgets, re-rank settings, pinned model
versions: the ``cascade serve --config`` file) and ``<g>-router`` (the ab_router catalog with
the canary's weights and the graph's experiments). The pods re-read the router file when it
changes, so a canary step moves traffic without a restart; a hash of what they read only at
start (the config, the served experiment and its variants' configs) sits on the pod template,
so changing those rolls the pods.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from typing import Any

import yaml

from ab_router.design import Experiment as ExperimentDesign
from contract.graph_config import GraphConfig
from operators.crds.specs import API_VERSION, InferenceGraphSpec, canary_experiment

MANAGER = "cascade-operator"
GRAPH_LABEL = "serving.cascade.dev/graph"
CONFIG_HASH = "serving.cascade.dev/config-hash"

GRAPH_HTTP, GRAPH_GRPC = 8000, 9000
TRITON_HTTP, TRITON_GRPC, TRITON_METRICS = 8000, 8001, 8002

#: Where the pods find things.
MODELS_DIR = "/models"
CONFIG_DIR = "/etc/cascade/graph"
ROUTER_DIR = "/etc/cascade/router"

#: The same hardening the chart puts on its own pods.
POD_SECURITY = {
    "runAsNonRoot": True,
    "runAsUser": 10001,
    "runAsGroup": 10001,
    "fsGroup": 10001,
    "seccompProfile": {"type": "RuntimeDefault"},
}
CONTAINER_SECURITY = {
    "allowPrivilegeEscalation": False,
    "readOnlyRootFilesystem": True,
    "capabilities": {"drop": ["ALL"]},
}
RESOURCES = {
    "graph": {
        "requests": {"cpu": "1", "memory": "2Gi"},
        "limits": {"cpu": "2", "memory": "4Gi"},
    },
    "triton": {
        "requests": {"cpu": "1", "memory": "1Gi"},
        "limits": {"cpu": "2", "memory": "2Gi"},
    },
}


@dataclass(frozen=True)
class CanaryRoute:
    """A model version under test and its share of the graph's traffic."""

    model: str  # the Model resource
    repository_name: str  # its Triton name
    version: int
    weight: int

    @property
    def experiment(self) -> str:
        return canary_experiment(self.model)


@dataclass(frozen=True)
class GraphInputs:
    """Everything a graph's children depend on; :func:`render` reads nothing else."""

    name: str
    namespace: str
    uid: str
    spec: InferenceGraphSpec
    #: The serving image (no torch): every container but the model build.
    image: str
    #: The factory image (torch): the init container that runs ``cascade build``.
    factory_image: str
    model_versions: dict[str, int] = field(default_factory=dict)
    canary: CanaryRoute | None = None
    experiments: tuple[ExperimentDesign, ...] = ()
    replicas: dict[str, int] = field(default_factory=dict)
    #: Whether the cluster serves the Prometheus Operator's ServiceMonitor.
    service_monitor: bool = False
    #: Whether the cluster serves ``policy/v1`` PodDisruptionBudgets (Kubernetes >= 1.21).
    disruption_budget: bool = True


def child_name(graph: str, component: str) -> str:
    return f"{graph}-{component}"


def labels(graph: str, component: str | None = None) -> dict[str, str]:
    out = {
        "app.kubernetes.io/name": "cascade",
        "app.kubernetes.io/instance": graph,
        "app.kubernetes.io/managed-by": MANAGER,
        GRAPH_LABEL: graph,
    }
    if component is not None:
        out["app.kubernetes.io/component"] = component
    return out


def selector(graph: str, component: str) -> dict[str, str]:
    return {GRAPH_LABEL: graph, "app.kubernetes.io/component": component}


def graph_config(inputs: GraphInputs) -> dict[str, Any]:
    """The ``cascade serve --config`` file: the fields the resource sets, built and checked
    with the data plane's own :class:`~contract.graph_config.GraphConfig`, so the operator
    never writes a config the pods would refuse."""
    s = inputs.spec.stages
    overrides = {
        "candidates": s.retrieval.candidates,
        "similar_candidates": s.similar.candidates,
        "budgets": {
            "retrieval_ms": s.retrieval.budget_ms,
            "ranking_ms": s.ranking.budget_ms,
            "rerank_ms": s.rerank.budget_ms,
            "similar_ms": s.similar.budget_ms,
            "total_ms": inputs.spec.deadline_ms,
        },
        "rerank": {"mmr_lambda": s.rerank.mmr_lambda, "deny_items": list(s.rerank.deny_items)},
        "model_versions": dict(sorted(inputs.model_versions.items())),
    }
    config = GraphConfig().with_overrides(overrides)
    return config.model_dump(mode="json", include=set(overrides))


def router_catalog(inputs: GraphInputs) -> dict[str, Any]:
    """The ab_router catalog: the canary split first, then the graph's experiments.

    Each experiment gets a layer of its own, so they are hashed independently of each other.
    """
    layers: list[dict[str, Any]] = []
    c = inputs.canary
    if c is not None:
        versions = {**inputs.model_versions, c.repository_name: c.version}
        layers.append(
            {
                "name": c.experiment,
                "experiments": [
                    {
                        "name": c.experiment,
                        "layer": c.experiment,
                        "variants": [
                            {"name": "stable", "weight": 100 - c.weight, "config": {}},
                            {
                                "name": "canary",
                                "weight": c.weight,
                                "config": {"model_versions": dict(sorted(versions.items()))},
                            },
                        ],
                    }
                ],
            }
        )
    for exp in inputs.experiments:
        data = exp.model_dump(mode="json")
        data["layer"] = exp.name
        layers.append({"name": exp.name, "experiments": [data]})
    return {"layers": layers}


def served_experiment(inputs: GraphInputs) -> str | None:
    """The experiment that splits traffic: a canary wins over the spec's experiment."""
    if inputs.canary is not None:
        return inputs.canary.experiment
    wanted = inputs.spec.experiment
    return wanted if any(e.name == wanted for e in inputs.experiments) else None


def render(inputs: GraphInputs) -> list[dict[str, Any]]:
    """Every child of the graph, in apply order (config before the pods that read it)."""
    config_text = yaml.safe_dump(graph_config(inputs), sort_keys=True)
    catalog = router_catalog(inputs)
    router_text = yaml.safe_dump(catalog, sort_keys=False)
    digest = _restart_digest(config_text, catalog, served_experiment(inputs))
    children = [
        _config_map(inputs, "config", {"graph.yaml": config_text}),
        _config_map(inputs, "router", {"experiments.yaml": router_text}),
        _triton_deployment(inputs),
        _service(
            inputs,
            "triton",
            [("http", TRITON_HTTP), ("grpc", TRITON_GRPC), ("metrics", TRITON_METRICS)],
        ),
        _graph_deployment(inputs, digest),
        _service(inputs, "graph", [("http", GRAPH_HTTP), ("grpc", GRAPH_GRPC)]),
    ]
    if inputs.disruption_budget and inputs.spec.disruption_budget.enabled:
        children.append(_pdb(inputs))
    if inputs.service_monitor and inputs.spec.monitoring.service_monitor:
        children.append(_service_monitor(inputs))
    return children


def _restart_digest(config_text: str, catalog: dict[str, Any], served: str | None) -> str:
    """What the graph pods only read at start: the config, which experiment they serve and its
    variants' configs. Weights are left out: the pods re-read the router file in place (a
    canary step must not restart the graph)."""
    variants = [
        {"name": v["name"], "config": v.get("config", {})}
        for layer in catalog["layers"]
        for exp in layer["experiments"]
        if exp["name"] == served
        for v in exp["variants"]
    ]
    text = json.dumps([config_text, served, variants], sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def owner_reference(inputs: GraphInputs) -> dict[str, Any]:
    return {
        "apiVersion": API_VERSION,
        "kind": "InferenceGraph",
        "name": inputs.name,
        "uid": inputs.uid,
        "controller": True,
        "blockOwnerDeletion": True,
    }


def _meta(inputs: GraphInputs, component: str) -> dict[str, Any]:
    return {
        "name": child_name(inputs.name, component),
        "namespace": inputs.namespace,
        "labels": labels(inputs.name, component),
        "ownerReferences": [owner_reference(inputs)],
    }


def _config_map(inputs: GraphInputs, component: str, data: dict[str, str]) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": _meta(inputs, component),
        "data": data,
    }


def _model_volume(inputs: GraphInputs) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """The repository volume and the init containers that fill it, per the spec's source."""
    repo = inputs.spec.model_repository
    if repo.pvc is not None:
        volume = {
            "name": "models",
            "persistentVolumeClaim": {"claimName": repo.pvc, "readOnly": True},
        }
        return volume, []
    volume = {"name": "models", "emptyDir": {}}
    if repo.build is not None:
        build = f"cascade build --dataset {repo.build.dataset} --out {MODELS_DIR}"
        command = ["sh", "-c", f"set -e; for i in $(seq {repo.build.versions}); do {build}; done"]
        image = inputs.factory_image
    else:
        fetch = (
            "import sys, tarfile, urllib.request; "
            "tarfile.open(fileobj=urllib.request.urlopen(sys.argv[1]), mode='r|*')"
            ".extractall(sys.argv[2], filter='data')"
        )
        command = ["python", "-c", fetch, str(repo.uri), MODELS_DIR]
        image = inputs.image
    init = _container(inputs, "models", command, "graph", image=image)
    init.pop("ports")
    return volume, [init]


def _container(
    inputs: GraphInputs, name: str, command: list[str], role: str, *, image: str | None = None
) -> dict[str, Any]:
    return {
        "name": name,
        "image": image or inputs.image,
        "imagePullPolicy": "IfNotPresent",
        "command": command,
        "env": [
            {"name": "HOME", "value": "/tmp"},
            {"name": "RAY_USAGE_STATS_ENABLED", "value": "0"},
        ],
        "ports": [],
        "resources": RESOURCES[role],
        "securityContext": CONTAINER_SECURITY,
        "volumeMounts": [
            {"name": "models", "mountPath": MODELS_DIR},
            {"name": "tmp", "mountPath": "/tmp"},
        ],
    }


def _probes(port: int) -> dict[str, Any]:
    def probe(path: str, **extra: int) -> dict[str, Any]:
        return {"httpGet": {"path": path, "port": port}, "periodSeconds": 5, **extra}

    return {
        "startupProbe": probe("/v2/health/live", failureThreshold=60),
        "livenessProbe": probe("/v2/health/live", failureThreshold=3),
        "readinessProbe": probe("/v2/health/ready", failureThreshold=2),
    }


def _deployment(
    inputs: GraphInputs,
    component: str,
    container: dict[str, Any],
    extra_volumes: list[dict[str, Any]],
    annotations: dict[str, str],
) -> dict[str, Any]:
    volume, init = _model_volume(inputs)
    template_meta: dict[str, Any] = {"labels": labels(inputs.name, component)}
    if annotations:
        template_meta["annotations"] = annotations
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": _meta(inputs, component),
        "spec": {
            "replicas": inputs.replicas.get(component, _min_replicas(inputs, component)),
            "selector": {"matchLabels": selector(inputs.name, component)},
            "template": {
                "metadata": template_meta,
                "spec": {
                    "securityContext": POD_SECURITY,
                    "initContainers": init,
                    "containers": [container],
                    "volumes": [volume, {"name": "tmp", "emptyDir": {}}, *extra_volumes],
                },
            },
        },
    }


def _min_replicas(inputs: GraphInputs, component: str) -> int:
    scaling = inputs.spec.autoscaling
    return (scaling.graph if component == "graph" else scaling.triton).min_replicas


def _triton_deployment(inputs: GraphInputs) -> dict[str, Any]:
    command = [
        "cascade",
        "triton",
        "--repo",
        MODELS_DIR,
        "--host",
        "0.0.0.0",
        "--http-port",
        str(TRITON_HTTP),
        "--grpc-port",
        str(TRITON_GRPC),
        "--metrics-port",
        str(TRITON_METRICS),
    ]
    container = _container(inputs, "triton", command, "triton")
    container["ports"] = [
        {"name": "http", "containerPort": TRITON_HTTP},
        {"name": "grpc", "containerPort": TRITON_GRPC},
        {"name": "metrics", "containerPort": TRITON_METRICS},
    ]
    container.update(_probes(TRITON_HTTP))
    return _deployment(inputs, "triton", container, [], {})


def _graph_deployment(inputs: GraphInputs, digest: str) -> dict[str, Any]:
    triton = child_name(inputs.name, "triton")
    command = [
        "cascade",
        "serve",
        "--repo",
        MODELS_DIR,
        "--host",
        "0.0.0.0",
        "--http-port",
        str(GRAPH_HTTP),
        "--grpc-port",
        str(GRAPH_GRPC),
        "--triton-grpc",
        f"{triton}:{TRITON_GRPC}",
        "--triton-http",
        f"{triton}:{TRITON_HTTP}",
        "--config",
        f"{CONFIG_DIR}/graph.yaml",
    ]
    served = served_experiment(inputs)
    if served is not None:
        command += ["--experiments", f"{ROUTER_DIR}/experiments.yaml", "--experiment", served]
        if inputs.spec.event_store is not None:
            command += ["--event-store", inputs.spec.event_store]
    container = _container(inputs, "graph", command, "graph")
    container["ports"] = [
        {"name": "http", "containerPort": GRAPH_HTTP},
        {"name": "grpc", "containerPort": GRAPH_GRPC},
    ]
    container["volumeMounts"] += [
        {"name": "config", "mountPath": CONFIG_DIR, "readOnly": True},
        {"name": "router", "mountPath": ROUTER_DIR, "readOnly": True},
    ]
    container.update(_probes(GRAPH_HTTP))
    volumes = [
        {"name": "config", "configMap": {"name": child_name(inputs.name, "config")}},
        {"name": "router", "configMap": {"name": child_name(inputs.name, "router")}},
    ]
    return _deployment(inputs, "graph", container, volumes, {CONFIG_HASH: digest})


def _service(inputs: GraphInputs, component: str, ports: list[tuple[str, int]]) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": _meta(inputs, component),
        "spec": {
            "selector": selector(inputs.name, component),
            "ports": [
                {"name": name, "port": port, "targetPort": name, "protocol": "TCP"}
                for name, port in ports
            ],
        },
    }


def _pdb(inputs: GraphInputs) -> dict[str, Any]:
    """At most one graph pod down at a time during voluntary disruptions (drains, upgrades).

    ``maxUnavailable`` rather than ``minAvailable``: with one replica a drain still proceeds.
    """
    return {
        "apiVersion": "policy/v1",
        "kind": "PodDisruptionBudget",
        "metadata": _meta(inputs, "graph"),
        "spec": {
            "maxUnavailable": inputs.spec.disruption_budget.max_unavailable,
            "selector": {"matchLabels": selector(inputs.name, "graph")},
        },
    }


def _service_monitor(inputs: GraphInputs) -> dict[str, Any]:
    return {
        "apiVersion": "monitoring.coreos.com/v1",
        "kind": "ServiceMonitor",
        "metadata": _meta(inputs, "metrics"),
        "spec": {
            "selector": {"matchLabels": {GRAPH_LABEL: inputs.name}},
            "endpoints": [
                {"port": "http", "path": "/metrics", "interval": "15s"},
                {"port": "metrics", "path": "/metrics", "interval": "15s"},
            ],
        },
    }


def fingerprint(obj: dict[str, Any]) -> str:
    """A stable digest of a manifest, to tell whether an apply would change anything."""
    return hashlib.sha256(json.dumps(obj, sort_keys=True).encode()).hexdigest()
