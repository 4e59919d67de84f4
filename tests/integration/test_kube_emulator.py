"""The Kubernetes emulator behaves like an API server where the operator depends on it.

Each test drives it over real HTTP, mostly with the official ``kubernetes`` client built from
the written kubeconfig (what kopf logs in with), and with urllib or aiohttp where the client
cannot send the request (YAML apply bodies, raw watch streams, broken bodies).
"""

from __future__ import annotations

import json
import re
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp
import kubernetes
import pytest
import yaml
from kubernetes.client import (
    AppsV1Api,
    CoreV1Api,
    CustomObjectsApi,
    V1ConfigMap,
    V1DeleteOptions,
    V1ObjectMeta,
)
from kubernetes.client.exceptions import ApiException

from tests.integration.kube_emulator import SERVICE_MONITORS, ApiError, KubeEmulator

pytestmark = pytest.mark.integration

CASCADE = "serving.cascade.dev/v1alpha1"
MODELS = "/apis/serving.cascade.dev/v1alpha1/namespaces/default/models"
CONFIGMAPS = "/api/v1/namespaces/default/configmaps"
DEPLOYMENTS = "/apis/apps/v1/namespaces/default/deployments"
MERGE = "application/merge-patch+json"
JSON_PATCH = "application/json-patch+json"
APPLY = "application/apply-patch+yaml"
RFC3339 = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ$")


@pytest.fixture
def kube(tmp_path: Path) -> Iterator[KubeEmulator]:
    with KubeEmulator(tmp_path) as emulator:
        yield emulator


@pytest.fixture
def api(kube: KubeEmulator) -> Iterator[kubernetes.client.ApiClient]:
    with kubernetes.config.new_client_from_config(config_file=str(kube.kubeconfig)) as client:
        yield client


def http(
    kube: KubeEmulator,
    method: str,
    path: str,
    body: Any = None,
    content_type: str = "application/json",
) -> tuple[int, dict[str, Any]]:
    """One raw request; the status and the decoded JSON answer (errors included)."""
    data = body if isinstance(body, bytes | None) else json.dumps(body).encode()
    headers = {"Content-Type": content_type}
    request = urllib.request.Request(kube.url + path, data=data, method=method, headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        with error:
            return error.code, json.loads(error.read())


def watch(kube: KubeEmulator, path: str) -> Iterator[dict[str, Any]]:
    """Open a watch now (the server registers it before answering); the events on iteration."""
    response = urllib.request.urlopen(kube.url + path, timeout=10)

    def events() -> Iterator[dict[str, Any]]:
        with response:
            yield from (json.loads(line) for line in response if line.strip())

    return events()


def model(name: str, **spec: Any) -> dict[str, Any]:
    return {"apiVersion": CASCADE, "kind": "Model", "metadata": {"name": name}, "spec": spec}


def rv(obj: dict[str, Any]) -> int:
    return int(obj["metadata"]["resourceVersion"])


def test_kubeconfig_and_discovery_serve_kopf_and_the_client(
    kube: KubeEmulator, api: kubernetes.client.ApiClient
) -> None:
    config = yaml.safe_load(kube.kubeconfig.read_text())
    assert config["current-context"] == "kube-emulator"
    assert config["contexts"][0]["context"]["namespace"] == "default"
    assert config["users"][0]["user"]["token"]

    assert kubernetes.client.VersionApi(api).get_code().major == "1"
    assert kubernetes.client.CoreApi(api).get_api_versions().versions == ["v1"]
    groups = {g.name for g in kubernetes.client.ApisApi(api).get_api_versions().groups}
    assert {"apps", "policy", "autoscaling", "events.k8s.io", "apiextensions.k8s.io"} <= groups
    assert {"coordination.k8s.io", "kopf.dev", "serving.cascade.dev"} <= groups
    assert "monitoring.coreos.com" not in groups  # off until added

    core = CoreV1Api(api).get_api_resources()
    assert core.group_version == "v1"
    assert {r.name: r.namespaced for r in core.resources}["namespaces"] is False
    assert CoreV1Api(api).read_namespace("default").metadata.name == "default"

    # What kopf's scanner reads: name, kind, singularName, namespaced, verbs, "<plural>/status".
    found = CustomObjectsApi(api).get_api_resources("serving.cascade.dev", "v1alpha1")
    resources = {r.name: r for r in found.resources}
    graphs = resources["inferencegraphs"]
    assert (graphs.kind, graphs.singular_name, graphs.namespaced) == (
        "InferenceGraph",
        "inferencegraph",
        True,
    )
    assert {"get", "list", "watch", "create", "patch", "update", "delete"} <= set(graphs.verbs)
    assert {"models", "models/status", "inferencegraphs/status", "experiments/status"} <= set(
        resources
    )
    _, peerings = http(kube, "GET", "/apis/kopf.dev/v1")
    scopes = {r["name"]: r["namespaced"] for r in peerings["resources"]}
    assert scopes == {"kopfpeerings": True, "clusterkopfpeerings": False}
    _, apps = http(kube, "GET", "/apis/apps/v1")
    assert {"deployments", "deployments/status", "deployments/scale"} <= {
        r["name"] for r in apps["resources"]
    }


def test_create_sets_server_metadata_and_refuses_duplicates(
    kube: KubeEmulator, api: kubernetes.client.ApiClient
) -> None:
    core = CoreV1Api(api)
    body = V1ConfigMap(metadata=V1ObjectMeta(name="settings"), data={"k": "v"})
    created = core.create_namespaced_config_map("default", body)
    assert uuid.UUID(created.metadata.uid).version == 4
    assert created.metadata.generation == 1
    raw = kube.get("v1", "ConfigMap", "settings")
    assert raw is not None
    assert RFC3339.match(raw["metadata"]["creationTimestamp"])
    assert raw["metadata"]["namespace"] == "default"  # from the URL, the body had none

    generated = core.create_namespaced_config_map(
        "default", V1ConfigMap(metadata=V1ObjectMeta(generate_name="gen-"))
    )
    assert re.fullmatch(r"gen-[a-z0-9]{5}", generated.metadata.name)

    with pytest.raises(ApiException) as duplicate:
        core.create_namespaced_config_map("default", body)
    assert duplicate.value.status == 409
    status = json.loads(duplicate.value.body)
    assert (status["kind"], status["reason"], status["code"]) == ("Status", "AlreadyExists", 409)

    # One counter for all resources: a later write of another kind has a higher version.
    later = kube.create(model("m"))
    assert (
        rv(later)
        > int(generated.metadata.resource_version)
        > int(created.metadata.resource_version)
    )

    code, moved = http(
        kube, "POST", "/api/v1/namespaces/kube-system/configmaps", {"metadata": {"name": "x"}}
    )
    assert (code, moved["metadata"]["namespace"]) == (201, "kube-system")
    code, wrong = http(
        kube, "POST", CONFIGMAPS, {"metadata": {"name": "y", "namespace": "kube-system"}}
    )
    assert (code, wrong["reason"]) == (400, "BadRequest")


def test_writes_bump_resource_version_and_spec_changes_bump_generation(
    kube: KubeEmulator,
) -> None:
    created = kube.create(model("m", replicas=1))
    labelled = kube.patch(CASCADE, "Model", "m", {"metadata": {"labels": {"tier": "gold"}}})
    assert rv(labelled) > rv(created)
    assert labelled["metadata"]["generation"] == 1  # metadata is not generation

    respec = kube.patch(CASCADE, "models", "m", {"spec": {"replicas": 2}})
    assert (rv(respec) > rv(labelled), respec["metadata"]["generation"]) == (True, 2)

    status = kube.patch(CASCADE, "Model", "m", {"status": {"ready": True}}, subresource="status")
    assert (rv(status) > rv(respec), status["metadata"]["generation"]) == (True, 2)
    assert status["status"] == {"ready": True}

    # A write that changes nothing stores nothing: no new version, no watch event.
    again = kube.patch(CASCADE, "Model", "m", {"spec": {"replicas": 2}})
    assert rv(again) == rv(status)


def test_stale_writes_get_409_conflict_and_change_nothing(
    kube: KubeEmulator, api: kubernetes.client.ApiClient
) -> None:
    core = CoreV1Api(api)
    core.create_namespaced_config_map("default", V1ConfigMap(metadata=V1ObjectMeta(name="c")))
    stale = core.read_namespaced_config_map("c", "default")
    fresh = core.read_namespaced_config_map("c", "default")
    fresh.metadata.labels = {"v": "1"}
    core.replace_namespaced_config_map("c", "default", fresh)

    stale.metadata.labels = {"v": "stale"}
    with pytest.raises(ApiException) as conflict:
        core.replace_namespaced_config_map("c", "default", stale)
    assert conflict.value.status == 409
    assert json.loads(conflict.value.body)["reason"] == "Conflict"

    old_version = stale.metadata.resource_version
    code, body = http(
        kube,
        "PATCH",
        f"{CONFIGMAPS}/c",
        {"metadata": {"resourceVersion": old_version, "labels": {"v": "2"}}},
        MERGE,
    )
    assert (code, body["reason"]) == (409, "Conflict")
    current = kube.get("v1", "configmaps", "c")
    assert current is not None
    assert current["metadata"]["labels"] == {"v": "1"}

    # kopf's JSON-patches start with a `test` of the resourceVersion: a mismatch is a 422.
    ops = [
        {"op": "test", "path": "/metadata/resourceVersion", "value": old_version},
        {"op": "add", "path": "/data", "value": {"k": "v"}},
    ]
    code, body = http(kube, "PATCH", f"{CONFIGMAPS}/c", ops, JSON_PATCH)
    assert (code, body["reason"]) == (422, "Invalid")
    assert kube.get("v1", "configmaps", "c") == current


def test_put_replaces_the_object_but_not_server_fields_or_status(kube: KubeEmulator) -> None:
    created = kube.create({**model("m", a=1, b=2), "metadata": {"name": "m", "labels": {"x": "y"}}})
    status = kube.patch(CASCADE, "Model", "m", {"status": {"phase": "Ready"}}, subresource="status")
    body = {
        **model("m", a=5),
        "status": {"phase": "Hacked"},
        "metadata": {"name": "m", "creationTimestamp": "2000-01-01T00:00:00Z", "generation": 99},
    }
    code, replaced = http(kube, "PUT", f"{MODELS}/m", body)
    assert code == 200
    assert replaced["spec"] == {"a": 5}  # replaced, not merged
    assert "labels" not in replaced["metadata"]
    assert replaced["status"] == {"phase": "Ready"}  # status only through /status
    for key in ("uid", "creationTimestamp"):
        assert replaced["metadata"][key] == created["metadata"][key]
    assert (replaced["metadata"]["generation"], rv(replaced) > rv(status)) == (2, True)

    code, put_status = http(
        kube, "PUT", f"{MODELS}/m/status", {**replaced, "spec": {"a": 0}, "status": {"phase": "X"}}
    )
    assert (code, put_status["status"], put_status["spec"]) == (200, {"phase": "X"}, {"a": 5})
    assert put_status["metadata"]["generation"] == 2


def test_patch_content_types(kube: KubeEmulator, api: kubernetes.client.ApiClient) -> None:
    kube.create(model("m", keep=1, drop=2, items=[1, 2, 3], nested={"a": 1, "b": 2}))
    patch = {"spec": {"drop": None, "items": [9], "nested": {"b": None, "c": 3}}}
    code, merged = http(kube, "PATCH", f"{MODELS}/m", patch, MERGE)
    assert (code, merged["spec"]) == (200, {"keep": 1, "items": [9], "nested": {"a": 1, "c": 3}})

    ops = [
        {"op": "add", "path": "/spec/items/-", "value": 10},
        {"op": "remove", "path": "/spec/keep"},
        {"op": "replace", "path": "/spec/nested/a", "value": 0},
    ]
    code, patched = http(kube, "PATCH", f"{MODELS}/m", ops, JSON_PATCH)
    assert (code, patched["spec"]) == (200, {"items": [9, 10], "nested": {"a": 0, "c": 3}})
    code, missing = http(
        kube, "PATCH", f"{MODELS}/m", [{"op": "remove", "path": "/spec/nope"}], JSON_PATCH
    )
    assert (code, missing["reason"]) == (422, "Invalid")

    # The kubernetes client sends dict patches as strategic-merge patches: merged the same way.
    objects = CustomObjectsApi(api)
    result = objects.patch_namespaced_custom_object(
        "serving.cascade.dev", "v1alpha1", "default", "models", "m", {"spec": {"items": [1]}}
    )
    assert result["spec"] == {"items": [1], "nested": {"a": 0, "c": 3}}

    code, unsupported = http(kube, "PATCH", f"{MODELS}/m", {}, "text/plain")
    assert (code, unsupported["reason"]) == (415, "UnsupportedMediaType")


DEPLOYMENT_YAML = """
apiVersion: apps/v1
kind: Deployment
metadata:
  name: web
  labels: {app: web}
spec:
  replicas: 2
  selector: {matchLabels: {app: web}}
  template:
    metadata: {labels: {app: web}}
    spec:
      containers:
      - {name: a, image: "a:1"}
      - {name: b, image: "b:1"}
status:
  replicas: 2
"""


def test_server_side_apply_creates_merges_and_skips_no_ops(
    kube: KubeEmulator, api: kubernetes.client.ApiClient
) -> None:
    code, refused = http(kube, "PATCH", f"{DEPLOYMENTS}/web", DEPLOYMENT_YAML.encode(), APPLY)
    assert (code, refused["reason"]) == (400, "BadRequest")
    assert "fieldManager" in refused["message"]

    path = f"{DEPLOYMENTS}/web?fieldManager=cascade&force=true"
    code, created = http(kube, "PATCH", path, DEPLOYMENT_YAML.encode(), APPLY)
    assert (code, created["metadata"]["generation"]) == (201, 1)
    assert uuid.UUID(created["metadata"]["uid"])
    assert "status" not in created  # status is written through /status only

    code, again = http(kube, "PATCH", path, DEPLOYMENT_YAML.encode(), APPLY)
    assert (code, rv(again)) == (200, rv(created))  # idempotent: no version bump, no event

    # Another writer sets a field the applier does not manage; applies merge around it.
    kube.patch("apps/v1", "Deployment", "web", {"spec": {"paused": True}})
    applied = yaml.safe_load(DEPLOYMENT_YAML)
    applied["spec"]["template"]["spec"]["containers"] = [{"name": "a", "image": "a:2"}]
    result = AppsV1Api(api).patch_namespaced_deployment(
        "web",
        "default",
        applied,
        field_manager="cascade",
        force=True,
        _content_type=APPLY,
    )
    assert result.spec.paused is True
    assert result.spec.replicas == 2
    assert [c.image for c in result.spec.template.spec.containers] == ["a:2"]  # lists replaced
    assert result.metadata.generation == 3  # the paused patch, then the apply


def test_status_subresource_splits_the_writes(kube: KubeEmulator) -> None:
    created = kube.create({**model("m", a=1), "status": {"phase": "Ignored"}})
    assert "status" not in created

    code, main = http(kube, "PATCH", f"{MODELS}/m", {"status": {"phase": "X"}}, MERGE)
    assert (code, "status" in main, rv(main)) == (200, False, rv(created))

    code, status = http(
        kube,
        "PATCH",
        f"{MODELS}/m/status",
        {"spec": {"a": 2}, "metadata": {"labels": {"l": "v"}}, "status": {"phase": "Ready"}},
        MERGE,
    )
    assert code == 200
    assert (status["status"], status["spec"], "labels" in status["metadata"]) == (
        {"phase": "Ready"},
        {"a": 1},
        False,
    )
    assert (rv(status) > rv(created), status["metadata"]["generation"]) == (True, 1)
    assert http(kube, "GET", f"{MODELS}/m/status") == (200, status)

    kube.create({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "c"}})
    code, absent = http(kube, "GET", f"{CONFIGMAPS}/c/status")
    assert (code, absent["reason"]) == (404, "NotFound")
    with pytest.raises(ApiError, match="404"):
        kube.patch("v1", "ConfigMap", "c", {"status": {}}, subresource="status")

    kube.create({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "d"}})
    code, scale = http(kube, "PATCH", f"{DEPLOYMENTS}/d/scale", {"spec": {"replicas": 4}}, MERGE)
    assert (code, scale["kind"], scale["spec"]["replicas"]) == (200, "Scale", 4)
    deployment = kube.get("apps/v1", "deployments", "d")
    assert deployment is not None
    assert deployment["spec"]["replicas"] == 4


def test_lists_carry_kind_and_version_and_filter_by_selectors(
    kube: KubeEmulator, api: kubernetes.client.ApiClient
) -> None:
    for name, labels in [("a", {"app": "web", "tier": "1"}), ("b", {"app": "web"}), ("c", {})]:
        kube.create(
            {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": name, "labels": labels}}
        )
    other = kube.create(
        {
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": {"name": "d", "namespace": "kube-system", "labels": {"app": "db"}},
        }
    )
    code, listed = http(kube, "GET", CONFIGMAPS)
    assert (code, listed["kind"], listed["apiVersion"]) == (200, "ConfigMapList", "v1")
    assert listed["metadata"]["resourceVersion"] == other["metadata"]["resourceVersion"]
    assert [i["metadata"]["name"] for i in listed["items"]] == ["a", "b", "c"]

    core = CoreV1Api(api)
    cases = {
        "app=web": ["a", "b"],
        "app==web": ["a", "b"],
        "app!=web": ["c"],
        "app=web,tier=1": ["a"],
        "app in (web, db)": ["a", "b"],
        "app notin (web)": ["c"],
        "tier": ["a"],
        "!tier": ["b", "c"],
    }
    for selector, names in cases.items():
        found = core.list_namespaced_config_map("default", label_selector=selector)
        assert [i.metadata.name for i in found.items] == names, selector
    assert kube.list("v1", "configmaps", namespace=None, label_selector="app") == [
        kube.get("v1", "ConfigMap", "a"),
        kube.get("v1", "ConfigMap", "b"),
        other,
    ]
    by_name = core.list_namespaced_config_map("default", field_selector="metadata.name=b")
    assert [i.metadata.name for i in by_name.items] == ["b"]
    code, bad = http(kube, "GET", f"{CONFIGMAPS}?labelSelector=a%20b")
    assert (code, bad["reason"]) == (400, "BadRequest")


def test_watch_replays_since_a_version_filters_and_ends_at_timeout(kube: KubeEmulator) -> None:
    kube.create(model("before", n=0))
    _, listed = http(kube, "GET", MODELS)
    since = listed["metadata"]["resourceVersion"]
    started = time.monotonic()
    stream = watch(
        kube,
        f"{MODELS}?watch=true&labelSelector=app%3Dweb&resourceVersion={since}&timeoutSeconds=1",
    )
    created = kube.create({**model("m", n=1), "metadata": {"name": "m", "labels": {"app": "web"}}})
    changed = kube.patch(CASCADE, "Model", "m", {"spec": {"n": 2}})
    kube.create(model("unlabelled"))
    left = kube.patch(CASCADE, "Model", "m", {"metadata": {"labels": None}})
    events = [(e["type"], rv(e["object"]), e["object"]["spec"]["n"]) for e in stream]
    assert 0.9 < time.monotonic() - started < 5  # the stream ended after timeoutSeconds
    # Leaving the selector reads as DELETED, like the API server's filtered watches.
    assert events == [
        ("ADDED", rv(created), 1),
        ("MODIFIED", rv(changed), 2),
        ("DELETED", rv(left), 2),
    ]

    # Continuing from a seen version replays only the later changes: nothing is handled twice.
    resumed = watch(kube, f"{MODELS}?watch=true&resourceVersion={rv(changed)}&timeoutSeconds=0.2")
    assert [(e["type"], e["object"]["metadata"]["name"]) for e in resumed] == [
        ("ADDED", "unlabelled"),
        ("MODIFIED", "m"),
    ]

    # Without a version: the current objects first; with sendInitialEvents, then a bookmark.
    initial = list(watch(kube, f"{MODELS}?watch=true&sendInitialEvents=true&timeoutSeconds=0.2"))
    assert [e["type"] for e in initial] == ["ADDED", "ADDED", "ADDED", "BOOKMARK"]
    assert initial[-1]["object"]["metadata"]["annotations"] == {"k8s.io/initial-events-end": "true"}


@pytest.mark.asyncio
async def test_aiohttp_watch_gets_bookmarks(kube: KubeEmulator) -> None:
    kube.server.bookmark_interval = 0.2
    params = {"watch": "true", "allowWatchBookmarks": "true", "timeoutSeconds": "1"}
    async with (
        aiohttp.ClientSession() as session,
        session.get(kube.url + MODELS, params=params) as response,
    ):
        lines = [json.loads(line) async for line in response.content if line.strip()]
    assert response.status == 200
    assert {e["type"] for e in lines} == {"BOOKMARK"}
    assert all(e["object"]["metadata"]["resourceVersion"] for e in lines)


def test_stopping_ends_open_watches_promptly(tmp_path: Path) -> None:
    with KubeEmulator(tmp_path) as kube:
        stream = watch(kube, f"{MODELS}?watch=true")
        started = time.monotonic()
    assert list(stream) == []
    assert time.monotonic() - started < 5


def test_finalizers_defer_deletion_and_owners_take_dependents_along(
    kube: KubeEmulator, api: kubernetes.client.ApiClient
) -> None:
    owner = kube.create({**model("owner"), "metadata": {"name": "owner", "finalizers": ["t/x"]}})
    other = kube.create(model("other"))

    def owned(kind: str, api_version: str, name: str, *owners: dict[str, Any]) -> dict[str, Any]:
        refs = [
            {
                "apiVersion": o["apiVersion"],
                "kind": o["kind"],
                "name": o["metadata"]["name"],
                "uid": o["metadata"]["uid"],
            }
            for o in owners
        ]
        body = {
            "apiVersion": api_version,
            "kind": kind,
            "metadata": {"name": name, "ownerReferences": refs},
        }
        return kube.create(body)

    child = owned("ConfigMap", "v1", "child", owner)
    owned("Deployment", "apps/v1", "grandchild", child)
    owned("ConfigMap", "v1", "shared", owner, other)

    deleting = CustomObjectsApi(api).delete_namespaced_custom_object(
        "serving.cascade.dev",
        "v1alpha1",
        "default",
        "models",
        "owner",
        body=V1DeleteOptions(propagation_policy="Background"),
    )
    assert deleting["metadata"]["deletionTimestamp"]
    assert deleting["metadata"]["generation"] == owner["metadata"]["generation"] + 1
    assert kube.get(CASCADE, "Model", "owner") is not None
    assert kube.get("v1", "ConfigMap", "child") is not None
    with pytest.raises(ApiError, match="422"):
        kube.patch(CASCADE, "Model", "owner", {"metadata": {"finalizers": ["t/x", "t/y"]}})

    stream = watch(
        kube, f"{CONFIGMAPS}?watch=true&resourceVersion={rv(deleting)}&timeoutSeconds=0.5"
    )
    kube.patch(CASCADE, "Model", "owner", {"metadata": {"finalizers": None}})
    assert kube.get(CASCADE, "Model", "owner") is None
    assert kube.get("v1", "ConfigMap", "child") is None
    assert kube.get("apps/v1", "Deployment", "grandchild") is None
    assert kube.get("v1", "ConfigMap", "shared") is not None  # its other owner still lives
    assert [(e["type"], e["object"]["metadata"]["name"]) for e in stream] == [("DELETED", "child")]

    gone = CoreV1Api(api).delete_namespaced_config_map("shared", "default", body=V1DeleteOptions())
    assert gone["status"] == "Success"  # built-ins answer an immediate delete with a Status
    code, missing = http(kube, "DELETE", f"{CONFIGMAPS}/shared", {"kind": "DeleteOptions"})
    assert (code, missing["reason"], missing["details"]["name"]) == (404, "NotFound", "shared")


def test_service_monitors_are_off_until_added(
    kube: KubeEmulator, api: kubernetes.client.ApiClient, tmp_path: Path
) -> None:
    monitors = "/apis/monitoring.coreos.com/v1/namespaces/default/servicemonitors"
    crds = ("apiextensions.k8s.io/v1", "customresourcedefinitions")
    assert http(kube, "GET", monitors)[0] == 404
    assert kube.get(*crds, "servicemonitors.monitoring.coreos.com", namespace=None) is None

    kube.add_resource(SERVICE_MONITORS)
    assert kube.get(*crds, "servicemonitors.monitoring.coreos.com", namespace=None) is not None
    code, created = http(
        kube,
        "POST",
        monitors,
        {
            "apiVersion": "monitoring.coreos.com/v1",
            "kind": "ServiceMonitor",
            "metadata": {"name": "s"},
        },
    )
    assert (code, created["metadata"]["namespace"]) == (201, "default")

    # A CRD created by a client is served at once and gone with its CRD.
    crd = {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": "widgets.example.com"},
        "spec": {
            "group": "example.com",
            "scope": "Cluster",
            "names": {"plural": "widgets", "kind": "Widget"},
            "versions": [{"name": "v1", "served": True, "storage": True}],
        },
    }
    assert (
        http(kube, "POST", "/apis/apiextensions.k8s.io/v1/customresourcedefinitions", crd)[0] == 201
    )
    assert http(kube, "GET", "/apis/example.com/v1/widgets")[1]["kind"] == "WidgetList"
    kube.delete(*crds, "widgets.example.com")
    assert http(kube, "GET", "/apis/example.com/v1/widgets")[0] == 404

    with KubeEmulator(tmp_path / "extra", extra_resources=[SERVICE_MONITORS]) as extra:
        assert extra.list("monitoring.coreos.com/v1", "ServiceMonitor") == []


def test_request_log_counts_client_writes_only(
    kube: KubeEmulator, api: kubernetes.client.ApiClient
) -> None:
    kube.create(model("seeded"))  # helpers bypass HTTP: not in the log
    mark = len(kube.requests)
    core = CoreV1Api(api)
    core.create_namespaced_config_map("default", V1ConfigMap(metadata=V1ObjectMeta(name="c")))
    core.patch_namespaced_config_map("c", "default", {"data": {"k": "v"}})
    core.list_namespaced_config_map("default")
    writes = kube.requests.writes(since=mark)
    assert [(r.method.value, r.url.path) for r in writes] == [
        ("POST", CONFIGMAPS),
        ("PATCH", f"{CONFIGMAPS}/c"),
    ]
    assert len(kube.requests.writes(method="post", plural="configmaps")) == 1
    assert kube.requests.writes(plural="models") == []


def test_errors_are_status_objects(kube: KubeEmulator) -> None:
    kube.create(model("m"))
    cases: list[tuple[str, str, Any, str, int, str]] = [
        ("GET", "/apis/nope.dev/v1/things", None, "application/json", 404, "NotFound"),
        ("GET", f"{MODELS}/absent", None, "application/json", 404, "NotFound"),
        ("POST", MODELS, b"{not json", "application/json", 400, "BadRequest"),
        ("PUT", MODELS, {}, "application/json", 405, "MethodNotAllowed"),
        ("POST", MODELS, model("Bad_Name"), "application/json", 422, "Invalid"),
        ("POST", MODELS, {"metadata": {}}, "application/json", 422, "Invalid"),
        ("POST", "/apis", {}, "application/json", 405, "MethodNotAllowed"),
    ]
    for method, path, body, content_type, code, reason in cases:
        status, answer = http(kube, method, path, body, content_type)
        assert (status, answer["kind"], answer["code"], answer["reason"]) == (
            code,
            "Status",
            code,
            reason,
        ), (method, path)
        assert answer["message"]


def test_wait_for_returns_the_value_or_fails_naming_what(kube: KubeEmulator) -> None:
    kube.create(model("m"))
    found = kube.wait_for(lambda: kube.get(CASCADE, "Model", "m"), what="the model")
    assert found["metadata"]["name"] == "m"
    with pytest.raises(AssertionError, match="the missing model"):
        kube.wait_for(
            lambda: kube.get(CASCADE, "Model", "x"), timeout=0.2, what="the missing model"
        )
