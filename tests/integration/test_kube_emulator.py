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

from tests.integration.kube_emulator import (
    SERVICE_MONITORS,
    STATUS,
    ApiError,
    KubeEmulator,
    ResourceSpec,
)

pytestmark = pytest.mark.integration

CASCADE = "serving.cascade.dev/v1alpha1"
MODELS = "/apis/serving.cascade.dev/v1alpha1/namespaces/default/models"
GRAPHS = "/apis/serving.cascade.dev/v1alpha1/namespaces/default/inferencegraphs"
# The API semantics are tested on a schemaless custom resource (any spec goes); the schema
# tests use the chart's CRDs (Model, InferenceGraph, Experiment).
WIDGET = ResourceSpec("example.com", "v1", "widgets", "Widget", subresources=STATUS)
WIDGET_API = WIDGET.api_version
WIDGETS = "/apis/example.com/v1/namespaces/default/widgets"
CONFIGMAPS = "/api/v1/namespaces/default/configmaps"
DEPLOYMENTS = "/apis/apps/v1/namespaces/default/deployments"
MERGE = "application/merge-patch+json"
JSON_PATCH = "application/json-patch+json"
APPLY = "application/apply-patch+yaml"
CRDS = "/apis/apiextensions.k8s.io/v1/customresourcedefinitions"
RFC3339 = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ$")


@pytest.fixture
def kube(tmp_path: Path) -> Iterator[KubeEmulator]:
    with KubeEmulator(tmp_path, extra_resources=[WIDGET]) as emulator:
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


def raw(
    kube: KubeEmulator, method: str, path: str, body: bytes | None = None
) -> tuple[int, str, str]:
    """One raw request; the status, the Content-Type and the body as text."""
    request = urllib.request.Request(kube.url + path, data=body, method=method)
    request.add_header("Content-Type", "application/json")
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, response.headers["Content-Type"], response.read().decode()
    except urllib.error.HTTPError as error:
        with error:
            return error.code, error.headers["Content-Type"], error.read().decode()


def watch(kube: KubeEmulator, path: str) -> Iterator[dict[str, Any]]:
    """Open a watch now (the server registers it before answering); the events on iteration."""
    response = urllib.request.urlopen(kube.url + path, timeout=10)

    def events() -> Iterator[dict[str, Any]]:
        with response:
            yield from (json.loads(line) for line in response if line.strip())

    return events()


def widget(name: str, **spec: Any) -> dict[str, Any]:
    return {"apiVersion": WIDGET_API, "kind": "Widget", "metadata": {"name": name}, "spec": spec}


def model(name: str, **spec: Any) -> dict[str, Any]:
    """A valid Model (the chart's CRD requires storageUri and version); ``spec`` adds to it."""
    body = {"storageUri": f"file:///models/{name}", "version": 1, **spec}
    return {"apiVersion": CASCADE, "kind": "Model", "metadata": {"name": name}, "spec": body}


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
    later = kube.create(widget("m"))
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
    created = kube.create(widget("m", replicas=1))
    labelled = kube.patch(WIDGET_API, "Widget", "m", {"metadata": {"labels": {"tier": "gold"}}})
    assert rv(labelled) > rv(created)
    assert labelled["metadata"]["generation"] == 1  # metadata is not generation

    respec = kube.patch(WIDGET_API, "widgets", "m", {"spec": {"replicas": 2}})
    assert (rv(respec) > rv(labelled), respec["metadata"]["generation"]) == (True, 2)

    status = kube.patch(
        WIDGET_API, "Widget", "m", {"status": {"ready": True}}, subresource="status"
    )
    assert (rv(status) > rv(respec), status["metadata"]["generation"]) == (True, 2)
    assert status["status"] == {"ready": True}

    # A write that changes nothing stores nothing: no new version, no watch event.
    again = kube.patch(WIDGET_API, "Widget", "m", {"spec": {"replicas": 2}})
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
    created = kube.create(
        {**widget("m", a=1, b=2), "metadata": {"name": "m", "labels": {"x": "y"}}}
    )
    status = kube.patch(
        WIDGET_API, "Widget", "m", {"status": {"phase": "Ready"}}, subresource="status"
    )
    body = {
        **widget("m", a=5),
        "status": {"phase": "Hacked"},
        "metadata": {"name": "m", "creationTimestamp": "2000-01-01T00:00:00Z", "generation": 99},
    }
    code, replaced = http(kube, "PUT", f"{WIDGETS}/m", body)
    assert code == 200
    assert replaced["spec"] == {"a": 5}  # replaced, not merged
    assert "labels" not in replaced["metadata"]
    assert replaced["status"] == {"phase": "Ready"}  # status only through /status
    for key in ("uid", "creationTimestamp"):
        assert replaced["metadata"][key] == created["metadata"][key]
    assert (replaced["metadata"]["generation"], rv(replaced) > rv(status)) == (2, True)

    code, put_status = http(
        kube, "PUT", f"{WIDGETS}/m/status", {**replaced, "spec": {"a": 0}, "status": {"phase": "X"}}
    )
    assert (code, put_status["status"], put_status["spec"]) == (200, {"phase": "X"}, {"a": 5})
    assert put_status["metadata"]["generation"] == 2


def test_patch_content_types(kube: KubeEmulator, api: kubernetes.client.ApiClient) -> None:
    kube.create(widget("m", keep=1, drop=2, items=[1, 2, 3], nested={"a": 1, "b": 2}))
    patch = {"spec": {"drop": None, "items": [9], "nested": {"b": None, "c": 3}}}
    code, merged = http(kube, "PATCH", f"{WIDGETS}/m", patch, MERGE)
    assert (code, merged["spec"]) == (200, {"keep": 1, "items": [9], "nested": {"a": 1, "c": 3}})

    ops = [
        {"op": "add", "path": "/spec/items/-", "value": 10},
        {"op": "remove", "path": "/spec/keep"},
        {"op": "replace", "path": "/spec/nested/a", "value": 0},
    ]
    code, patched = http(kube, "PATCH", f"{WIDGETS}/m", ops, JSON_PATCH)
    assert (code, patched["spec"]) == (200, {"items": [9, 10], "nested": {"a": 0, "c": 3}})
    code, missing = http(
        kube, "PATCH", f"{WIDGETS}/m", [{"op": "remove", "path": "/spec/nope"}], JSON_PATCH
    )
    assert (code, missing["reason"]) == (422, "Invalid")

    # The kubernetes client sends dict patches as strategic-merge patches: merged the same way.
    objects = CustomObjectsApi(api)
    result = objects.patch_namespaced_custom_object(
        "example.com", "v1", "default", "widgets", "m", {"spec": {"items": [1]}}
    )
    assert result["spec"] == {"items": [1], "nested": {"a": 0, "c": 3}}

    code, unsupported = http(kube, "PATCH", f"{WIDGETS}/m", {}, "text/plain")
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
    created = kube.create({**widget("m", a=1), "status": {"phase": "Ignored"}})
    assert "status" not in created

    code, main = http(kube, "PATCH", f"{WIDGETS}/m", {"status": {"phase": "X"}}, MERGE)
    assert (code, "status" in main, rv(main)) == (200, False, rv(created))

    code, status = http(
        kube,
        "PATCH",
        f"{WIDGETS}/m/status",
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
    assert http(kube, "GET", f"{WIDGETS}/m/status") == (200, status)

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
    kube.create(widget("before", n=0))
    _, listed = http(kube, "GET", WIDGETS)
    since = listed["metadata"]["resourceVersion"]
    started = time.monotonic()
    stream = watch(
        kube,
        f"{WIDGETS}?watch=true&labelSelector=app%3Dweb&resourceVersion={since}&timeoutSeconds=1",
    )
    created = kube.create({**widget("m", n=1), "metadata": {"name": "m", "labels": {"app": "web"}}})
    changed = kube.patch(WIDGET_API, "Widget", "m", {"spec": {"n": 2}})
    kube.create(widget("unlabelled"))
    left = kube.patch(WIDGET_API, "Widget", "m", {"metadata": {"labels": None}})
    events = [(e["type"], rv(e["object"]), e["object"]["spec"]["n"]) for e in stream]
    assert 0.9 < time.monotonic() - started < 5  # the stream ended after timeoutSeconds
    # Leaving the selector reads as DELETED, like the API server's filtered watches.
    assert events == [
        ("ADDED", rv(created), 1),
        ("MODIFIED", rv(changed), 2),
        ("DELETED", rv(left), 2),
    ]

    # Continuing from a seen version replays only the later changes: nothing is handled twice.
    resumed = watch(kube, f"{WIDGETS}?watch=true&resourceVersion={rv(changed)}&timeoutSeconds=0.2")
    assert [(e["type"], e["object"]["metadata"]["name"]) for e in resumed] == [
        ("ADDED", "unlabelled"),
        ("MODIFIED", "m"),
    ]

    # Without a version: the current objects first; with sendInitialEvents, then a bookmark.
    initial = list(watch(kube, f"{WIDGETS}?watch=true&sendInitialEvents=true&timeoutSeconds=0.2"))
    assert [e["type"] for e in initial] == ["ADDED", "ADDED", "ADDED", "BOOKMARK"]
    assert initial[-1]["object"]["metadata"]["annotations"] == {"k8s.io/initial-events-end": "true"}


@pytest.mark.asyncio
async def test_aiohttp_watch_gets_bookmarks(kube: KubeEmulator) -> None:
    kube.server.bookmark_interval = 0.2
    params = {"watch": "true", "allowWatchBookmarks": "true", "timeoutSeconds": "1"}
    async with (
        aiohttp.ClientSession() as session,
        session.get(kube.url + WIDGETS, params=params) as response,
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
    owner = kube.create({**widget("owner"), "metadata": {"name": "owner", "finalizers": ["t/x"]}})
    other = kube.create(widget("other"))

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
        "example.com",
        "v1",
        "default",
        "widgets",
        "owner",
        body=V1DeleteOptions(propagation_policy="Background"),
    )
    assert deleting["metadata"]["deletionTimestamp"]
    assert deleting["metadata"]["generation"] == owner["metadata"]["generation"] + 1
    assert kube.get(WIDGET_API, "Widget", "owner") is not None
    assert kube.get("v1", "ConfigMap", "child") is not None
    with pytest.raises(ApiError, match="422"):
        kube.patch(WIDGET_API, "Widget", "owner", {"metadata": {"finalizers": ["t/x", "t/y"]}})

    stream = watch(
        kube, f"{CONFIGMAPS}?watch=true&resourceVersion={rv(deleting)}&timeoutSeconds=0.5"
    )
    kube.patch(WIDGET_API, "Widget", "owner", {"metadata": {"finalizers": None}})
    assert kube.get(WIDGET_API, "Widget", "owner") is None
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
    assert raw(kube, "GET", monitors)[0] == 404
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
    schema = {"type": "object", "x-kubernetes-preserve-unknown-fields": True}
    crd = {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": "things.example.com"},
        "spec": {
            "group": "example.com",
            "scope": "Cluster",
            "names": {"plural": "things", "kind": "Thing"},
            "versions": [
                {
                    "name": "v1",
                    "served": True,
                    "storage": True,
                    "schema": {"openAPIV3Schema": schema},
                }
            ],
        },
    }
    assert http(kube, "POST", CRDS, crd)[0] == 201
    assert http(kube, "GET", "/apis/example.com/v1/things")[1]["kind"] == "ThingList"
    kube.delete(*crds, "things.example.com")
    assert raw(kube, "GET", "/apis/example.com/v1/things")[0] == 404

    with KubeEmulator(tmp_path / "extra", extra_resources=[SERVICE_MONITORS]) as extra:
        assert extra.list("monitoring.coreos.com/v1", "ServiceMonitor") == []


def test_request_log_counts_client_writes_only(
    kube: KubeEmulator, api: kubernetes.client.ApiClient
) -> None:
    kube.create(widget("seeded"))  # helpers bypass HTTP: not in the log
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
    assert kube.requests.writes(plural="widgets") == []


def test_errors_are_status_objects(kube: KubeEmulator) -> None:
    kube.create(widget("m"))
    cases: list[tuple[str, str, Any, str, int, str]] = [
        ("GET", "/api/v1/namespaces/default/things", None, "application/json", 404, "NotFound"),
        ("GET", f"{WIDGETS}/absent", None, "application/json", 404, "NotFound"),
        ("POST", WIDGETS, b"{not json", "application/json", 400, "BadRequest"),
        ("PUT", WIDGETS, {}, "application/json", 405, "MethodNotAllowed"),
        ("POST", WIDGETS, widget("Bad_Name"), "application/json", 422, "Invalid"),
        ("POST", WIDGETS, {"metadata": {}}, "application/json", 422, "Invalid"),
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
    kube.create(widget("m"))
    found = kube.wait_for(lambda: kube.get(WIDGET_API, "Widget", "m"), what="the widget")
    assert found["metadata"]["name"] == "m"
    with pytest.raises(AssertionError, match="the missing widget"):
        kube.wait_for(
            lambda: kube.get(WIDGET_API, "Widget", "x"), timeout=0.2, what="the missing widget"
        )


# ---- where the emulator is as strict as kube-apiserver 1.20 ---------------------------------
# The expected messages are what a real 1.20.2 server answered to the same requests.

PLAIN_404 = (404, "text/plain; charset=utf-8", "404 page not found\n")
GADGETS = "/apis/example.com/v1/namespaces/default/gadgets"
GADGET_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "metadata": {"type": "object", "properties": {"name": {"type": "string", "maxLength": 12}}},
        "spec": {
            "type": "object",
            "required": ["size"],
            "properties": {
                "size": {"type": "integer", "minimum": 1, "maximum": 10},
                "ratio": {
                    "type": "number",
                    "minimum": 0,
                    "exclusiveMinimum": True,
                    "maximum": 1000000,
                    "default": 0.5,
                },
                "color": {"type": "string", "enum": ["red", "blue"], "default": "red"},
                "slug": {"type": "string", "pattern": "^[a-z]+$", "maxLength": 8},
                "tags": {
                    "type": "array",
                    "minItems": 1,
                    "items": {"type": "string", "pattern": "^[a-z]+$"},
                },
                "parts": {
                    "type": "array",
                    "items": {
                        "type": "object",
                        "properties": {
                            "name": {"type": "string"},
                            "count": {"type": "integer", "default": 1},
                        },
                    },
                },
                "limits": {"type": "object", "additionalProperties": {"type": "integer"}},
                "note": {"type": "string", "nullable": True, "default": "none"},
                "extra": {"type": "object", "x-kubernetes-preserve-unknown-fields": True},
                "policy": {
                    "type": "object",
                    "default": {"mode": "auto"},
                    "properties": {
                        "mode": {"type": "string"},
                        "retries": {"type": "integer", "default": 3},
                    },
                },
                "steps": {
                    "type": "array",
                    "items": {"type": "integer"},
                    # CEL: 1.20 does not evaluate these rules, so neither does the emulator.
                    "x-kubernetes-validations": [{"rule": "self.size() > 99", "message": "no"}],
                },
            },
        },
        "status": {
            "type": "object",
            "properties": {
                "phase": {"type": "string", "enum": ["Ready", "Failed"]},
                "message": {"type": "string", "default": ""},
            },
        },
    },
}


def gadget_crd(schema: dict[str, Any] | None = None) -> dict[str, Any]:
    version: dict[str, Any] = {"name": "v1", "served": True, "storage": True}
    version["subresources"] = {"status": {}}
    if schema is not None:
        version["schema"] = {"openAPIV3Schema": schema}
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": "gadgets.example.com"},
        "spec": {
            "group": "example.com",
            "scope": "Namespaced",
            "names": {"plural": "gadgets", "kind": "Gadget"},
            "versions": [version],
        },
    }


def gadget(name: str, **spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": "example.com/v1",
        "kind": "Gadget",
        "metadata": {"name": name},
        "spec": spec,
    }


@pytest.fixture
def gadgets(kube: KubeEmulator) -> KubeEmulator:
    """The emulator with the Gadget CRD installed through the API, as ``kubectl apply`` would."""
    code, created = http(kube, "POST", CRDS, gadget_crd(GADGET_SCHEMA))
    assert code == 201, created
    return kube


def causes(status: dict[str, Any]) -> list[tuple[str, str]]:
    """(field, message) of each cause, sorted: a real server lists them in random order."""
    return sorted((c["field"], c["message"]) for c in status["details"]["causes"])


def test_paths_nobody_serves_get_a_plain_text_404(
    kube: KubeEmulator, api: kubernetes.client.ApiClient
) -> None:
    monitors = "/apis/monitoring.coreos.com/v1/namespaces/default/servicemonitors"
    unserved = [
        ("GET", "/apis/monitoring.coreos.com/v1"),  # discovery of a group without its CRD
        ("GET", "/apis/monitoring.coreos.com"),
        ("GET", monitors),
        ("GET", f"{monitors}?watch=true"),
        ("GET", f"{monitors}/recs-metrics"),
        ("POST", monitors),
        ("PATCH", f"{monitors}/recs-metrics?fieldManager=cascade"),
        ("GET", "/apis/serving.cascade.dev/v2"),  # a served group, another version
        ("GET", "/apis/serving.cascade.dev/v2/namespaces/default/models"),
        ("GET", "/apis/serving.cascade.dev/v1alpha1/namespaces/default/widgets"),  # no CRD
        ("GET", "/apis/serving.cascade.dev/v1alpha1/models/m"),  # namespaced, no namespace
        ("GET", "/apis/kopf.dev/v1/namespaces/default/clusterkopfpeerings"),  # cluster-scoped
    ]
    for method, path in unserved:
        body = None if method == "GET" else b"{}"
        assert raw(kube, method, path, body) == PLAIN_404, (method, path)
    # What kopf and the official client see: an ApiException whose body is not JSON.
    with pytest.raises(ApiException) as missing:
        CustomObjectsApi(api).get_api_resources("monitoring.coreos.com", "v1")
    assert (missing.value.status, missing.value.body) == (404, PLAIN_404[2])

    # A served group/version: a missing object is a Status naming it.
    code, absent = http(kube, "GET", f"{MODELS}/absent")
    assert (code, absent) == (
        404,
        {
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Failure",
            "message": 'models.serving.cascade.dev "absent" not found',
            "reason": "NotFound",
            "details": {"name": "absent", "group": "serving.cascade.dev", "kind": "models"},
            "code": 404,
        },
    )
    # Built-in groups (go-restful) answer a Status for what they do not serve; a CRD's handler
    # answers an unserved subresource with the object's NotFound, even when it exists.
    for path in ("/api/v1/namespaces/default/things", "/apis/apps/v9", f"{CONFIGMAPS}/c/scale"):
        code, unknown = http(kube, "GET", path)
        assert (code, unknown["message"]) == (
            404,
            "the server could not find the requested resource",
        ), path
    kube.create(model("m"))
    code, scale = http(kube, "GET", f"{MODELS}/m/scale")
    assert (code, scale["message"]) == (404, 'models.serving.cascade.dev "m" not found')

    # Once the CRD exists, discovery lists the group/version and misses are Status objects.
    kube.add_resource(SERVICE_MONITORS)
    code, resources = http(kube, "GET", "/apis/monitoring.coreos.com/v1")
    assert (code, [r["name"] for r in resources["resources"]]) == (200, ["servicemonitors"])
    code, group = http(kube, "GET", "/apis/monitoring.coreos.com")
    assert (code, group["preferredVersion"]["groupVersion"]) == (200, "monitoring.coreos.com/v1")
    code, absent = http(kube, "GET", f"{monitors}/recs-metrics")
    assert (code, absent["message"]) == (
        404,
        'servicemonitors.monitoring.coreos.com "recs-metrics" not found',
    )


def test_custom_resources_are_validated_against_their_schema(gadgets: KubeEmulator) -> None:
    kube = gadgets
    code, status = http(kube, "POST", GADGETS, gadget("g", size=0))
    assert (code, status["reason"], status["code"]) == (422, "Invalid", 422)
    assert status["message"] == (
        'Gadget.example.com "g" is invalid: spec.size: Invalid value: 0: '
        "spec.size in body should be greater than or equal to 1"
    )
    assert status["details"] == {
        "name": "g",
        "group": "example.com",
        "kind": "Gadget",
        "causes": [
            {
                "reason": "FieldValueInvalid",
                "message": (
                    "Invalid value: 0: spec.size in body should be greater than or equal to 1"
                ),
                "field": "spec.size",
            }
        ],
    }

    # Several errors: every one a cause, the message lists them in brackets. An error inside an
    # array names the array (1.20's validator loses the index), CEL rules are not evaluated, and
    # a pattern's `$` does not match before a final newline (Go's regexp).
    body = gadget(
        "g",
        size=2.5,
        ratio=0,
        color="green",
        slug="abc\n",
        tags=["ok", "Bad"],
        limits={"cpu": "2"},
        steps=[1],
    )
    code, status = http(kube, "POST", GADGETS, body)
    assert causes(status) == [
        ("spec.color", 'Unsupported value: "green": supported values: "red", "blue"'),
        (
            "spec.limits.cpu",
            'Invalid value: "string": spec.limits.cpu in body must be of type integer: "string"',
        ),
        ("spec.ratio", "Invalid value: 0: spec.ratio in body should be greater than 0"),
        (
            "spec.size",
            'Invalid value: "number": spec.size in body must be of type integer: "number"',
        ),
        ("spec.slug", "Invalid value: \"abc\\n\": spec.slug in body should match '^[a-z]+$'"),
        ("spec.tags", "Invalid value: \"Bad\": spec.tags in body should match '^[a-z]+$'"),
    ]
    assert status["message"].startswith('Gadget.example.com "g" is invalid: [spec.')
    assert all(f"{field}: {message}" in status["message"] for field, message in causes(status))
    code, status = http(
        kube, "POST", GADGETS, gadget("g", size=1, ratio=2000000.5, slug="toolonger", tags=[])
    )
    assert causes(status) == [
        (
            "spec.ratio",
            "Invalid value: 2.0000005e+06: spec.ratio in body should be less than or equal to "
            "1e+06",
        ),
        (
            "spec.slug",
            'Invalid value: "toolonger": spec.slug in body should be at most 8 chars long',
        ),
        ("spec.tags", "Invalid value: 0: spec.tags in body should have at least 1 items"),
    ]
    code, status = http(kube, "POST", GADGETS, gadget("g"))
    assert (code, status["message"]) == (
        422,
        'Gadget.example.com "g" is invalid: spec.size: Required value',
    )
    assert kube.list("example.com/v1", "gadgets") == []

    # Every write is validated (the whole object: a status write too) and refused whole.
    code, created = http(kube, "POST", GADGETS, gadget("g", size=2.0))  # 2.0 is an integer
    assert (code, created["spec"]["size"]) == (201, 2)
    writes: list[tuple[str, str, Any, str]] = [
        ("PATCH", f"{GADGETS}/g", {"spec": {"size": 11}}, MERGE),
        (
            "PATCH",
            f"{GADGETS}/g",
            [{"op": "replace", "path": "/spec/size", "value": 11}],
            JSON_PATCH,
        ),
        ("PUT", f"{GADGETS}/g", {**created, "spec": {"size": 11}}, "application/json"),
        ("PATCH", f"{GADGETS}/g?fieldManager=t&force=true", gadget("g", size=11), APPLY),
    ]
    for method, path, patch, content_type in writes:
        data = yaml.safe_dump(patch).encode() if content_type == APPLY else patch
        code, status = http(kube, method, path, data, content_type)
        assert (code, causes(status)) == (
            422,
            [
                (
                    "spec.size",
                    "Invalid value: 11: spec.size in body should be less than or equal to 10",
                )
            ],
        ), (method, content_type)
    code, status = http(kube, "PATCH", f"{GADGETS}/g/status", {"status": {"phase": "Up"}}, MERGE)
    assert (code, causes(status)) == (
        422,
        [("status.phase", 'Unsupported value: "Up": supported values: "Ready", "Failed"')],
    )
    assert kube.get("example.com/v1", "Gadget", "g") == created

    # A name the CRD's schema restricts: both the name rule and the schema apply.
    code, status = http(kube, "POST", GADGETS, gadget("a-long-gadget", size=1))
    assert causes(status) == [
        (
            "metadata.name",
            'Invalid value: "a-long-gadget": metadata.name in body should be at most 12 chars long',
        )
    ]


def test_unknown_fields_are_pruned_and_defaults_filled_in(gadgets: KubeEmulator) -> None:
    kube = gadgets
    body = {
        **gadget(
            "g",
            size=1,
            ratio=2.0,
            unknown=True,
            parts=[{"name": "a", "colour": "red"}, {"name": "b", "count": 2}],
            limits={"cpu": 2, "gpu": None},
            note=None,
            extra={"anything": {"goes": [1]}},
            policy={"mode": "manual", "level": 9},
            color=None,
        ),
        "status": {"phase": "Ready"},  # dropped: status is written through /status only
        "top": "level",
    }
    body["metadata"] = {"name": "g", "labels": {"a": "b"}, "bogus": "meta"}
    code, created = http(kube, "POST", GADGETS, body)
    assert code == 201
    assert created["spec"] == {
        "size": 1,
        "ratio": 2,  # float64 2.0 is written back as 2
        "color": "red",  # a non-nullable null is defaulted
        "parts": [{"name": "a", "count": 1}, {"name": "b", "count": 2}],
        "limits": {"cpu": 2},  # a non-nullable null without default is dropped
        "note": None,  # nullable: kept, not defaulted
        "extra": {"anything": {"goes": [1]}},  # x-kubernetes-preserve-unknown-fields
        "policy": {"mode": "manual", "retries": 3},
    }
    assert "top" not in created
    assert "status" not in created
    assert "bogus" not in created["metadata"]  # metadata is ObjectMeta: other fields go
    assert created["metadata"]["labels"] == {"a": "b"}

    # Defaults fill in what a patch removes, and an object default carries its own defaults.
    code, patched = http(
        kube, "PATCH", f"{GADGETS}/g", {"spec": {"color": None, "policy": None}}, MERGE
    )
    assert (code, patched["spec"]["color"], patched["spec"]["policy"]) == (
        200,
        "red",
        {"mode": "auto", "retries": 3},
    )
    assert patched["metadata"]["generation"] == 2
    # Unknown fields vanish without an error (kopf's status.kopf, for one); status defaults too.
    status = {"status": {"phase": "Ready", "kopf": {"progress": {}}}, "spec": {"size": 5}}
    code, written = http(kube, "PATCH", f"{GADGETS}/g/status", status, MERGE)
    assert (code, written["status"], written["spec"]["size"]) == (
        200,
        {"phase": "Ready", "message": ""},
        1,
    )
    # A write that only adds unknown fields changes nothing, so stores nothing.
    code, same = http(kube, "PATCH", f"{GADGETS}/g", {"spec": {"unknown": 1}}, MERGE)
    assert (code, rv(same)) == (200, rv(written))


def test_the_charts_crds_are_installed_and_enforced(kube: KubeEmulator) -> None:
    crds = ("apiextensions.k8s.io/v1", "customresourcedefinitions")
    for name in (
        "models.serving.cascade.dev",
        "inferencegraphs.serving.cascade.dev",
        "experiments.serving.cascade.dev",
        "kopfpeerings.kopf.dev",
        "clusterkopfpeerings.kopf.dev",
    ):
        crd = kube.get(*crds, name, namespace=None)
        assert crd is not None, name
        assert crd["metadata"]["labels"] == {"app.kubernetes.io/part-of": "cascade"}

    created = kube.create(model("m"))
    assert created["spec"]["runtime"] == "triton"  # defaulted from the chart's schema
    with pytest.raises(ApiError) as bad_version:
        kube.create(model("n", version=0))
    assert bad_version.value.code == 422
    assert "spec.version: Invalid value: 0: spec.version in body" in bad_version.value.message

    # What the operator's invalid-spec scenario posts: the schema refuses it before any
    # controller sees it.
    graph = {
        "apiVersion": CASCADE,
        "kind": "InferenceGraph",
        "metadata": {"name": "recs"},
        "spec": {"modelRepository": {"build": {}}, "stages": {"ranking": {"budgetMs": -5}}},
    }
    code, status = http(kube, "POST", GRAPHS, graph)
    assert (code, [field for field, _ in causes(status)]) == (422, ["spec.stages.ranking.budgetMs"])

    condition = {
        "type": "Ready",
        "status": "Maybe",
        "reason": "Bad reason",
        "lastTransitionTime": "",
    }
    code, status = http(
        kube, "PATCH", f"{MODELS}/m/status", {"status": {"conditions": [condition]}}, MERGE
    )
    assert code == 422
    assert {field for field, _ in causes(status)} == {
        "status.conditions.reason",
        "status.conditions.status",
    }
    # kopf's own status field is not in the schema: pruned, silently.
    code, written = http(
        kube, "PATCH", f"{MODELS}/m/status", {"status": {"kopf": {"progress": {}}}}, MERGE
    )
    assert (code, "kopf" in (written.get("status") or {})) == (200, False)
    # kopf's peering objects keep whatever their status holds.
    peering = kube.create(
        {
            "apiVersion": "kopf.dev/v1",
            "kind": "ClusterKopfPeering",
            "metadata": {"name": "cascade"},
            "status": {"peer-1": {"priority": 100, "lifetime": 60}},
        }
    )
    assert peering["status"] == {"peer-1": {"priority": 100, "lifetime": 60}}


def test_crd_schemas_are_checked_and_their_changes_apply_on_read(kube: KubeEmulator) -> None:
    code, status = http(kube, "POST", CRDS, gadget_crd(None))
    assert (code, status["message"]) == (
        422,
        'CustomResourceDefinition.apiextensions.k8s.io "gadgets.example.com" is invalid: '
        "spec.versions[0].schema.openAPIV3Schema: Required value: schemas are required",
    )
    spec_schema: dict[str, Any] = {
        "type": "object",
        "properties": {"a": {"type": "string", "default": 5}},
    }
    schema = {"type": "object", "properties": {"spec": spec_schema}}
    code, status = http(kube, "POST", CRDS, gadget_crd(schema))
    assert (code, status["message"]) == (
        422,
        'CustomResourceDefinition.apiextensions.k8s.io "gadgets.example.com" is invalid: '
        "spec.validation.openAPIV3Schema.properties[spec].properties[a].default: "
        'Invalid value: "integer":  in body must be of type string: "integer"',
    )

    spec_schema["properties"]["a"]["default"] = "x"
    assert http(kube, "POST", CRDS, gadget_crd(schema))[0] == 201
    code, created = http(kube, "POST", GADGETS, gadget("g", a="y", b=1))
    assert (code, created["spec"]) == (201, {"a": "y"})

    # The server decodes stored objects with the current schema on every read: a new default
    # shows at once, at the same resourceVersion (nothing was written).
    spec_schema["properties"]["c"] = {"type": "integer", "default": 7}
    crd = kube.get(
        "apiextensions.k8s.io/v1", "customresourcedefinitions", "gadgets.example.com", None
    )
    assert crd is not None
    crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"] = schema
    assert http(kube, "PUT", f"{CRDS}/gadgets.example.com", crd)[0] == 200
    code, read = http(kube, "GET", f"{GADGETS}/g")
    assert (code, read["spec"], rv(read)) == (200, {"a": "y", "c": 7}, rv(created))


def test_names_are_validated_per_kind(kube: KubeEmulator) -> None:
    # Bodies a real server would take but for their names (the emulator checks only names).
    def service(**meta: str) -> dict[str, Any]:
        return {"metadata": meta, "spec": {"ports": [{"port": 80}]}}

    services = "/api/v1/namespaces/default/services"
    code, status = http(kube, "POST", services, service(name="2024-recs-triton"))
    assert (code, status["reason"]) == (422, "Invalid")
    assert status["message"] == (
        'Service "2024-recs-triton" is invalid: metadata.name: Invalid value: "2024-recs-triton": '
        "a DNS-1035 label must consist of lower case alphanumeric characters or '-', start with "
        "an alphabetic character, and end with an alphanumeric character (e.g. 'my-name',  or "
        "'abc-123', regex used for validation is '[a-z]([-a-z0-9]*[a-z0-9])?')"
    )
    assert status["details"]["kind"] == "Service"
    assert "group" not in status["details"]
    code, status = http(kube, "POST", services, service(name="a" * 64))
    assert causes(status) == [
        ("metadata.name", f'Invalid value: "{"a" * 64}": must be no more than 63 characters')
    ]
    code, status = http(kube, "POST", services, service(generateName="1x-"))
    assert [field for field, _ in causes(status)] == ["metadata.generateName", "metadata.name"]
    assert re.fullmatch(r'Service "1x-\w{5}" is invalid: \[.*\]', status["message"])

    # Namespaces are DNS-1123 labels: a leading digit is fine, a dot is not.
    assert http(kube, "POST", "/api/v1/namespaces", {"metadata": {"name": "2024-x"}})[0] == 201
    code, status = http(kube, "POST", "/api/v1/namespaces", {"metadata": {"name": "a.b"}})
    assert causes(status) == [
        (
            "metadata.name",
            'Invalid value: "a.b": a lowercase RFC 1123 label must consist of lower case '
            "alphanumeric characters or '-', and must start and end with an alphanumeric "
            "character (e.g. 'my-name',  or '123-abc', regex used for validation is "
            "'[a-z0-9]([-a-z0-9]*[a-z0-9])?')",
        )
    ]

    # Most kinds take DNS-1123 subdomains: dots are fine, a capital or '_' is not.
    subdomain = (
        "a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' "
        "or '.', and must start and end with an alphanumeric character (e.g. 'example.com', "
        "regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*"
        "[a-z0-9])?)*')"
    )
    labels = {"app": "recs"}
    pod = {"metadata": {"labels": labels}, "spec": {"containers": [{"name": "c", "image": "i"}]}}
    deployment = {
        "metadata": {"name": "2024.recs-graph"},
        "spec": {"selector": {"matchLabels": labels}, "template": pod},
    }
    assert http(kube, "POST", DEPLOYMENTS, deployment)[0] == 201
    code, status = http(kube, "POST", CONFIGMAPS, {"metadata": {"name": "Bad_Name"}})
    assert status["message"] == (
        f'ConfigMap "Bad_Name" is invalid: metadata.name: Invalid value: "Bad_Name": {subdomain}'
    )
    code, status = http(kube, "POST", CONFIGMAPS, {"metadata": {"name": "a" * 254}})
    assert causes(status) == [
        ("metadata.name", f'Invalid value: "{"a" * 254}": must be no more than 253 characters')
    ]
    # Custom resources too, and then their CRD's schema for metadata.name (the chart's Model
    # restricts it to a pattern and 56 characters).
    code, status = http(kube, "POST", MODELS, model("Bad_Name"))
    assert causes(status) == [
        ("metadata.name", f'Invalid value: "Bad_Name": {subdomain}'),
        (
            "metadata.name",
            'Invalid value: "Bad_Name": metadata.name in body should match '
            "'^[a-z0-9]+(?:-[a-z0-9]+)*$'",
        ),
    ]
    # core/v1 Events keep their legacy validation, which checks no name.
    event = {"metadata": {"name": "Odd_Event.1"}, "involvedObject": {"namespace": "default"}}
    assert http(kube, "POST", "/api/v1/namespaces/default/events", event)[0] == 201
