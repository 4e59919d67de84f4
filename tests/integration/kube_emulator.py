"""An in-memory Kubernetes API server for the operator's integration tests.

Why: no kube-apiserver exists on the test machines, and kmock's ``KubernetesEmulator`` stores
objects but lacks the API semantics an operator depends on: resourceVersion and generation,
409 conflicts on stale writes, the status subresource, server-side apply, owner garbage
collection, and discovery that kopf can scan. ``ApiServer`` adds them on top of kmock's object
store, request records and discovery endpoints; ``KubeEmulator`` serves it over real HTTP from
a background thread and writes a kubeconfig, so a ``cascade operator`` subprocess (kopf plus
the official ``kubernetes`` client) and aiohttp-based clients talk to it like to a cluster.

Where kube-apiserver 1.20 (what the e2e tier runs) is strict, the emulator is too, because a
looser emulator hides bugs until a cluster finds them: the chart's CRDs are installed at start
and custom resources are pruned, defaulted and validated against their schemas (422 ``Invalid``
with 1.20's messages; ``kube_emulator_schema`` holds these rules); names are validated per kind
(DNS-1035 labels for Services, ...); and paths under a group/version nobody serves answer 404
with ``404 page not found`` in plain text, not a ``Status``.

Known simplifications: server-side apply merges the applied fields into the object (dicts
recursively, lists replaced) without field ownership, so it never reports field conflicts and
never prunes fields a manager stopped applying; strategic-merge patches are merge patches (no
``$patch`` directives, lists replaced); garbage collection and namespace deletion are
synchronous; namespaces need not exist; built-in kinds keep unknown fields and are not
validated beyond their names; there is no other admission, no authentication and no ``dryRun``.
"""

from __future__ import annotations

import asyncio
import builtins
import copy
import datetime
import json
import random
import re
import threading
import time
import traceback
import uuid
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any, Self, TypeVar

import aiohttp.web
import jsonpatch
import jsonpointer
import kmock
import yaml

from tests.integration.kube_emulator_schema import (
    CrdSchema,
    FieldError,
    coerce_metadata,
    crd_schema_errors,
    go_json_numbers,
    invalid_message,
    name_errors,
    name_rule,
)

T = TypeVar("T")
Obj = dict[str, Any]
Requirement = tuple[str, str, frozenset[str]]  # (label key or field path, operator, values)

JSON_PATCH = "application/json-patch+json"
MERGE_PATCH = "application/merge-patch+json"
STRATEGIC_PATCH = "application/strategic-merge-patch+json"
APPLY_PATCH = "application/apply-patch+yaml"

# Groups served by kube-apiserver itself; any other group is a CRD and gets a CRD object.
BUILTIN_GROUPS = frozenset({"", "apps", "autoscaling", "batch", "policy"})
STATUS = frozenset({"status"})
VERBS = frozenset({"create", "delete", "get", "list", "patch", "update", "watch"})
# Fields only the server sets: writes cannot change them (name/namespace changes are refused).
SERVER_MANAGED = (
    "uid",
    "creationTimestamp",
    "generation",
    "resourceVersion",
    "deletionTimestamp",
    "deletionGracePeriodSeconds",
    "name",
    "namespace",
)
GENERATE_ALPHABET = "bcdfghjklmnpqrstvwxz2456789"  # the API server's: no vowels, no lookalikes


def _builtin_group(group: str) -> bool:
    return group in BUILTIN_GROUPS or group.endswith(".k8s.io")


@dataclass(frozen=True)
class ResourceSpec:
    """One served resource; the table of these is the only kind<->plural mapping."""

    group: str
    version: str
    plural: str
    kind: str
    namespaced: bool = True
    subresources: frozenset[str] = frozenset()

    def __post_init__(self) -> None:
        object.__setattr__(self, "subresources", frozenset(self.subresources))

    @property
    def api_version(self) -> str:
        return f"{self.group}/{self.version}" if self.group else self.version

    @property
    def key(self) -> tuple[str, str, str]:
        return (self.group, self.version, self.plural)

    @property
    def ref(self) -> kmock.resource:
        """The key of kmock's object store and resource discovery."""
        return kmock.resource(self.group, self.version, self.plural)

    @property
    def builtin(self) -> bool:
        return _builtin_group(self.group)

    @property
    def group_kind(self) -> str:
        """How the API server names the kind in 422 messages: ``Kind.group``."""
        return f"{self.kind}.{self.group}" if self.group else self.kind

    @property
    def crd_name(self) -> str:
        return f"{self.plural}.{self.group}"

    @property
    def qualified(self) -> str:
        """How the API server names the resource in messages: ``plural.group``."""
        return f"{self.plural}.{self.group}" if self.group else self.plural


NAMESPACES = ResourceSpec("", "v1", "namespaces", "Namespace", namespaced=False)
CRDS = ResourceSpec(
    "apiextensions.k8s.io",
    "v1",
    "customresourcedefinitions",
    "CustomResourceDefinition",
    namespaced=False,
    subresources=STATUS,
)
DEFAULT_RESOURCES: tuple[ResourceSpec, ...] = (
    NAMESPACES,
    ResourceSpec("", "v1", "configmaps", "ConfigMap"),
    ResourceSpec("", "v1", "services", "Service"),
    ResourceSpec("", "v1", "events", "Event"),
    ResourceSpec("", "v1", "pods", "Pod"),
    ResourceSpec("", "v1", "serviceaccounts", "ServiceAccount"),
    ResourceSpec("", "v1", "secrets", "Secret"),
    ResourceSpec("apps", "v1", "deployments", "Deployment", subresources=STATUS | {"scale"}),
    ResourceSpec(
        "policy", "v1", "poddisruptionbudgets", "PodDisruptionBudget", subresources=STATUS
    ),
    ResourceSpec(
        "autoscaling",
        "v2",
        "horizontalpodautoscalers",
        "HorizontalPodAutoscaler",
        subresources=STATUS,
    ),
    ResourceSpec("events.k8s.io", "v1", "events", "Event"),
    CRDS,
    ResourceSpec("coordination.k8s.io", "v1", "leases", "Lease"),
    # kopf's peering: the namespaced one for `--namespace`, the cluster one for `-A`.
    ResourceSpec("kopf.dev", "v1", "kopfpeerings", "KopfPeering"),
    ResourceSpec("kopf.dev", "v1", "clusterkopfpeerings", "ClusterKopfPeering", namespaced=False),
    ResourceSpec("serving.cascade.dev", "v1alpha1", "models", "Model", subresources=STATUS),
    ResourceSpec(
        "serving.cascade.dev", "v1alpha1", "inferencegraphs", "InferenceGraph", subresources=STATUS
    ),
    ResourceSpec(
        "serving.cascade.dev", "v1alpha1", "experiments", "Experiment", subresources=STATUS
    ),
)
# Off by default: the operator creates ServiceMonitors only where the Prometheus CRD exists.
SERVICE_MONITORS = ResourceSpec("monitoring.coreos.com", "v1", "servicemonitors", "ServiceMonitor")
DEFAULT_NAMESPACES = ("default", "kube-system")
# The chart's CRDs: installed at start, so custom resources meet the schemas a cluster applies.
CHART_CRDS = Path(__file__).resolve().parents[2] / "charts" / "cascade" / "crds"


class ApiError(Exception):
    """A failed API call, carrying the ``Status`` body the real API server would answer with."""

    def __init__(
        self, code: int, reason: str, message: str, details: Mapping[str, Any] | None = None
    ) -> None:
        super().__init__(f"{code} {reason}: {message}")
        self.code = code
        self.reason = reason
        self.message = message
        self.details = dict(details or {})

    def status(self) -> Obj:
        body: Obj = {
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Failure",
            "message": self.message,
            "reason": self.reason,
            "code": self.code,
        }
        if self.details:
            body["details"] = self.details
        return body


NOT_FOUND_BUILTIN = "the server could not find the requested resource"  # go-restful's 404


class PageNotFound(ApiError):
    """A path no API serves (e.g. a group/version without CRD): the Go mux's plain-text 404."""

    BODY = b"404 page not found\n"

    def __init__(self) -> None:
        super().__init__(404, "NotFound", self.BODY.decode().strip())


def _bad_request(message: str) -> ApiError:
    return ApiError(400, "BadRequest", message)


def _details(spec: ResourceSpec, name: str) -> Obj:
    return {"name": name, "group": spec.group, "kind": spec.plural}


def _not_found(spec: ResourceSpec, name: str) -> ApiError:
    return ApiError(404, "NotFound", f'{spec.qualified} "{name}" not found', _details(spec, name))


def _conflict(spec: ResourceSpec, name: str, why: str) -> ApiError:
    message = f'Operation cannot be fulfilled on {spec.qualified} "{name}": {why}'
    return ApiError(409, "Conflict", message, _details(spec, name))


def _invalid(spec: ResourceSpec, name: str, why: str) -> ApiError:
    message = f'{spec.group_kind} "{name}" is invalid: {why}'
    return ApiError(422, "Invalid", message, _invalid_details(spec, name, []))


def _invalid_fields(spec: ResourceSpec, name: str, errors: list[FieldError]) -> ApiError:
    """The 422 of ``apierrors.NewInvalid``: every field error a cause, the message joins them."""
    message = invalid_message(spec.group_kind, name, errors)
    return ApiError(422, "Invalid", message, _invalid_details(spec, name, errors))


def _invalid_details(spec: ResourceSpec, name: str, errors: list[FieldError]) -> Obj:
    # Unlike NotFound's (the plural), an Invalid's details name the kind; empty keys are omitted.
    details = {"name": name, "group": spec.group, "kind": spec.kind}
    result: Obj = {k: v for k, v in details.items() if v}
    if errors:
        result["causes"] = [e.cause() for e in errors]
    return result


def _now() -> str:
    return datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _merge_patch(target: Any, patch: Any) -> Any:
    """RFC 7386: dicts merge recursively, ``None`` deletes a key, anything else replaces."""
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    result = dict(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            result.pop(key, None)
        else:
            result[key] = _merge_patch(result.get(key), value)
    return result


def _without_version(obj: Obj) -> Obj:
    meta = {k: v for k, v in obj.get("metadata", {}).items() if k != "resourceVersion"}
    return {**obj, "metadata": meta}


def _payload(obj: Obj) -> Obj:
    """What generation tracks: everything outside metadata and status (e.g. spec)."""
    return {k: v for k, v in obj.items() if k not in ("apiVersion", "kind", "metadata", "status")}


def _set_or_pop(mapping: Obj, key: str, value: Any) -> None:
    if value is None:
        mapping.pop(key, None)
    else:
        mapping[key] = value


class _YamlLoader(yaml.SafeLoader):  # type: ignore[misc]  # no stubs for PyYAML
    """YAML without implicit timestamps: manifests must round-trip to JSON unchanged."""


_YamlLoader.yaml_implicit_resolvers = {
    first: [(tag, rx) for tag, rx in resolvers if tag != "tag:yaml.org,2002:timestamp"]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}


def _decode(body: bytes, content_type: str) -> Any:
    if not body.strip():
        return None
    try:
        if "yaml" in content_type:
            return yaml.load(body, Loader=_YamlLoader)  # a SafeLoader, without timestamps
        return json.loads(body)
    except (ValueError, yaml.YAMLError) as exc:
        raise _bad_request(f"the request body is not valid {content_type}: {exc}") from None


# A label requirement: `!key`, `key`, `key=v`, `key==v`, `key!=v`, `key in (a,b)`, `key notin (a)`.
_LABEL_REQUIREMENT = re.compile(
    r"\s*(?:!\s*(?P<absent>[\w./-]+)|(?P<key>[\w./-]+)"
    r"(?:\s*(?P<op>==|=|!=)\s*(?P<value>[\w.-]*)|\s+(?P<setop>in|notin)\s*\((?P<values>[^()]*)\))?)"
    r"\s*(?:,|$)"
)
_FIELD_REQUIREMENT = re.compile(r"^\s*(?P<path>[\w./-]+)\s*(?P<op>==|=|!=)\s*(?P<value>.*?)\s*$")


def parse_label_selector(text: str | None) -> tuple[Requirement, ...]:
    """Parse a ``labelSelector`` like the API server does (equality- and set-based)."""
    requirements: list[Requirement] = []
    pos, text = 0, text or ""
    while text.strip() and pos < len(text):
        match = _LABEL_REQUIREMENT.match(text, pos)
        if match is None or match.end() == pos:
            raise _bad_request(f"unable to parse requirement in labelSelector {text!r}")
        pos = match.end()
        if match["absent"]:
            requirements.append((match["absent"], "absent", frozenset()))
        elif match["setop"]:
            values = frozenset(v.strip() for v in match["values"].split(",") if v.strip())
            requirements.append((match["key"], match["setop"], values))
        elif match["op"]:
            op = "notin" if match["op"] == "!=" else "in"
            requirements.append((match["key"], op, frozenset({match["value"]})))
        else:
            requirements.append((match["key"], "exists", frozenset()))
    return tuple(requirements)


def parse_field_selector(text: str | None) -> tuple[Requirement, ...]:
    """Parse a ``fieldSelector``: equality on any dotted path (``metadata.name=x``)."""
    requirements: list[Requirement] = []
    for part in (text or "").split(","):
        if not part.strip():
            continue
        match = _FIELD_REQUIREMENT.match(part)
        if match is None:
            raise _bad_request(f"invalid fieldSelector requirement {part!r}")
        op = "notin" if match["op"] == "!=" else "in"
        requirements.append((match["path"], op, frozenset({match["value"]})))
    return tuple(requirements)


def _satisfies(requirements: Iterable[Requirement], values: Mapping[str, str]) -> bool:
    for key, op, expected in requirements:
        present, value = key in values, values.get(key)
        ok = {
            "exists": present,
            "absent": not present,
            "in": present and value in expected,
            "notin": not present or value not in expected,
        }[op]
        if not ok:
            return False
    return True


def _field_value(obj: Obj, path: str) -> str:
    value: Any = obj
    for part in path.split("."):
        value = value.get(part) if isinstance(value, dict) else None
    if isinstance(value, bool):
        return "true" if value else "false"
    return "" if value is None else str(value)


@dataclass(frozen=True)
class _Filter:
    """Which objects a list or a watch sees: namespace, label and field selectors."""

    namespace: str | None = None
    labels: tuple[Requirement, ...] = ()
    fields: tuple[Requirement, ...] = ()

    @classmethod
    def parse(cls, namespace: str | None, name: str | None, params: Mapping[str, str]) -> _Filter:
        fields = parse_field_selector(params.get("fieldSelector"))
        if name is not None:  # the old-style watch of one named object
            fields += (("metadata.name", "in", frozenset({name})),)
        return cls(namespace, parse_label_selector(params.get("labelSelector")), fields)

    def matches(self, obj: Obj) -> bool:
        meta = obj.get("metadata", {})
        if self.namespace is not None and meta.get("namespace") != self.namespace:
            return False
        fields = {path: _field_value(obj, path) for path, _, _ in self.fields}
        return _satisfies(self.labels, meta.get("labels") or {}) and _satisfies(self.fields, fields)


@dataclass(frozen=True)
class _Event:
    """One change as the store saw it: watches replay these by resourceVersion."""

    rv: int
    key: tuple[str, str, str]
    type: str
    old: Obj | None
    new: Obj


@dataclass(eq=False)
class _Watcher:
    spec: ResourceSpec
    filter: _Filter
    queue: asyncio.Queue[Obj | None] = field(default_factory=asyncio.Queue)

    def translate(self, event: _Event) -> Obj | None:
        """The event as this watch sees it: objects entering or leaving its selector are
        ADDED or DELETED, like the API server's filtered watches."""
        was = event.old is not None and self.filter.matches(event.old)
        if event.type == "DELETED":
            return {"type": "DELETED", "object": event.new} if was else None
        now = self.filter.matches(event.new)
        kind = "MODIFIED" if was and now else "ADDED" if now else "DELETED" if was else None
        return None if kind is None else {"type": kind, "object": event.new}


@dataclass(frozen=True)
class _Route:
    spec: ResourceSpec
    namespace: str | None
    name: str | None
    subresource: str | None


def _crd_for(spec: ResourceSpec) -> Obj:
    """The CustomResourceDefinition that serves ``spec``, as a chart would install it."""
    return {
        "apiVersion": CRDS.api_version,
        "kind": CRDS.kind,
        "metadata": {"name": spec.crd_name},
        "spec": {
            "group": spec.group,
            "scope": "Namespaced" if spec.namespaced else "Cluster",
            "names": {
                "plural": spec.plural,
                "singular": spec.kind.lower(),
                "kind": spec.kind,
                "listKind": f"{spec.kind}List",
            },
            "versions": [_crd_version(spec)],
        },
    }


def _crd_version(spec: ResourceSpec) -> Obj:
    schema = {"type": "object", "x-kubernetes-preserve-unknown-fields": True}
    return {
        "name": spec.version,
        "served": True,
        "storage": True,
        "schema": {"openAPIV3Schema": schema},
        "subresources": {name: {} for name in sorted(spec.subresources)},
    }


def _crd_specs(crd: Obj) -> list[ResourceSpec]:
    """The resources a CRD object serves; a malformed CRD is a 422 like in a cluster."""
    return [spec for spec, _ in _crd_served(crd)]


def _crd_served(crd: Obj) -> list[tuple[ResourceSpec, CrdSchema]]:
    """The resources a CRD object serves, each with its version's schema; a malformed CRD (or
    one whose schemas the API server refuses) is a 422 like in a cluster."""
    spec, name = crd.get("spec") or {}, crd.get("metadata", {}).get("name", "")
    names = spec.get("names") or {}
    group, plural, kind = spec.get("group"), names.get("plural"), names.get("kind")
    if not (group and plural and kind) or name != f"{plural}.{group}":
        raise _invalid(
            CRDS,
            name,
            "spec.group, spec.names.plural/kind are required and the name must be <plural>.<group>",
        )
    errors = crd_schema_errors(crd)
    if errors:
        raise _invalid_fields(CRDS, name, errors)
    return [
        (
            ResourceSpec(
                group,
                version["name"],
                plural,
                kind,
                namespaced=spec.get("scope", "Namespaced") == "Namespaced",
                subresources=frozenset(version.get("subresources") or {}),
            ),
            CrdSchema(version["schema"]["openAPIV3Schema"]),
        )
        for version in spec.get("versions") or []
        if version.get("served", True)
    ]


def load_crds(directory: Path = CHART_CRDS) -> list[Obj]:
    """The CustomResourceDefinitions in a folder's YAML files (the chart's by default)."""
    return [
        doc
        for path in sorted(directory.glob("*.yaml"))
        for doc in yaml.load_all(path.read_text(), Loader=_YamlLoader)
        if isinstance(doc, dict) and doc.get("kind") == CRDS.kind
    ]


class ApiServer(kmock.KubernetesEmulator):
    """kmock's emulator with the API server's write semantics; serves one event loop.

    Requests for declared resources are served here; everything else (``/version``, ``/api``,
    ``/apis/...`` discovery) goes to kmock, which builds discovery from ``self.resources``.
    All state changes happen synchronously inside the loop, so each request is atomic.
    """

    bookmark_interval = 30.0  # seconds; kopf reconnects a watch silent for 70 s

    def __init__(
        self,
        resources: Iterable[ResourceSpec] = DEFAULT_RESOURCES,
        crds: Iterable[Mapping[str, Any]] = (),
    ) -> None:
        super().__init__()
        self.specs: dict[tuple[str, str, str], ResourceSpec] = {}
        # The schema of each custom resource (by spec.key), from its CRD object.
        self.schemas: dict[tuple[str, str, str], CrdSchema] = {}
        self.internal_errors: list[str] = []
        self._rv = 0
        self._log: list[_Event] = []
        self._watchers: set[_Watcher] = set()
        self._closing = False
        resources = list(resources)
        for spec in resources:
            if spec.builtin:
                self._register(spec)
        for crd in crds:  # before the custom resources: they are served from these if listed
            self.create_object(CRDS, None, copy.deepcopy(dict(crd)))
        for spec in resources:
            self.add_resource(spec)
        for name in DEFAULT_NAMESPACES:
            self.create_object(NAMESPACES, None, {"metadata": {"name": name}})

    # -- the resource table ---------------------------------------------------------------

    def add_resource(self, spec: ResourceSpec) -> None:
        """Serve ``spec``: built-ins directly, custom resources through their CRD object (an
        installed CRD serves it as it is; a new one keeps any fields, like a schemaless CRD)."""
        if spec.builtin:
            self._register(spec)
            return
        crd = self.read_object(CRDS, None, spec.crd_name)
        if crd is None:
            self.create_object(CRDS, None, _crd_for(spec))
        elif spec.key not in self.specs:
            candidate = copy.deepcopy(crd)
            candidate["spec"]["versions"].append(_crd_version(spec))
            self._commit(CRDS, crd, candidate, None)

    def spec_for(self, api_version: str, kind_or_plural: str) -> ResourceSpec:
        group, _, version = api_version.rpartition("/")
        for spec in self.specs.values():
            if (spec.group, spec.version) == (group, version) and kind_or_plural in (
                spec.kind,
                spec.plural,
            ):
                return spec
        message = f"the server doesn't have a resource type {kind_or_plural!r} in {api_version}"
        raise ApiError(404, "NotFound", message)

    def _register(self, spec: ResourceSpec) -> None:
        self.specs[spec.key] = spec
        self.resources[spec.ref] = kmock.ResourceInfo(
            namespaced=spec.namespaced,
            kind=spec.kind,
            singular=spec.kind.lower(),
            verbs=VERBS,
            subresources=spec.subresources,
        )

    def _unregister(self, spec: ResourceSpec) -> None:
        for _, obj in self._live(spec):
            self._erase(spec, obj)
        self.specs.pop(spec.key, None)
        if spec.ref in self.resources:
            del self.resources[spec.ref]

    def _sync_crd(self, old: Obj | None, new: Obj | None) -> None:
        before = _crd_specs(old) if old is not None else []
        after = _crd_served(new) if new is not None else []
        for spec in before:
            if spec not in [s for s, _ in after]:
                self._unregister(spec)
                self.schemas.pop(spec.key, None)
        for spec, schema in after:
            self._register(spec)
            previous = self.schemas.get(spec.key)
            self.schemas[spec.key] = schema
            if previous is not None and previous.schema != schema.schema:
                self._reread(spec, schema)

    def _reread(self, spec: ResourceSpec, schema: CrdSchema) -> None:
        """After a schema change the server decodes stored objects with the new schema (pruned,
        defaulted) on every read, without writing them: store that view, at the same version."""
        for _, obj in list(self._live(spec)):
            decoded = go_json_numbers(schema.normalize(obj))
            if decoded != obj:
                self._put(spec, decoded)

    async def _serve_api(self, request: kmock.Request) -> Obj:
        # The client's V1APIVersions model requires serverAddressByClientCIDRs.
        address = f"{request.url.host}:{request.url.port}"
        cidrs = [{"clientCIDR": "0.0.0.0/0", "serverAddress": address}]
        return {"kind": "APIVersions", "versions": ["v1"], "serverAddressByClientCIDRs": cidrs}

    async def _serve_version(self, request: kmock.Request) -> Obj:
        # kmock answers /api/v1 with groupVersion "/v1" and gives subresources all verbs.
        payload: Obj = await super()._serve_version(request)  # type: ignore[assignment]
        payload["groupVersion"] = payload["groupVersion"].lstrip("/")
        for resource in payload["resources"]:
            resource["verbs"] = sorted(resource["verbs"])
            if resource["name"].endswith("/scale"):
                resource.update(kind="Scale", group="autoscaling", version="v1")
            if "/" in resource["name"]:
                resource["verbs"] = ["get", "patch", "update"]
        return payload

    def _get_resources(self) -> list[kmock.resource]:
        # Discovery lists exactly the declared resources, not kmock's guesses from objects.
        return [spec.ref for spec in self.specs.values()]

    # -- the store --------------------------------------------------------------------------

    def _key(self, spec: ResourceSpec, namespace: str | None, name: str) -> kmock.ObjectKey:
        return (spec.ref, namespace if spec.namespaced else None, name)

    def read_object(self, spec: ResourceSpec, namespace: str | None, name: str) -> Obj | None:
        """The stored object (never mutate it: every write stores a fresh dict)."""
        key = self._key(spec, namespace, name)
        if key not in self.objects or self.objects[key].deleted:
            return None
        return self.objects[key].last.raw

    def _require(self, spec: ResourceSpec, namespace: str | None, name: str) -> Obj:
        obj = self.read_object(spec, namespace, name)
        if obj is None:
            raise _not_found(spec, name)
        return obj

    def _put(self, spec: ResourceSpec, obj: Obj) -> None:
        key = self._key(spec, obj["metadata"].get("namespace"), obj["metadata"]["name"])
        if key in self.objects:
            self.objects[key].create(obj)  # appends a version to kmock's history
        else:
            self.objects[key] = obj

    def _live(self, spec: ResourceSpec | None = None) -> Iterator[tuple[ResourceSpec, Obj]]:
        for (ref, _, _), stored in list(self.objects.items()):
            found = self.specs.get((ref.group or "", ref.version or "", ref.plural or ""))
            if found is not None and not stored.deleted and (spec is None or found == spec):
                yield found, stored.last.raw

    def _bump(self) -> str:
        self._rv += 1
        return str(self._rv)

    def _emit(self, spec: ResourceSpec, kind: str, old: Obj | None, new: Obj) -> None:
        event = _Event(int(new["metadata"]["resourceVersion"]), spec.key, kind, old, new)
        self._log.append(event)
        for watcher in self._watchers:
            if watcher.spec.key == spec.key and (translated := watcher.translate(event)):
                watcher.queue.put_nowait(translated)

    # -- operations (synchronous: each runs atomically inside the loop) -----------------------

    def list_objects(self, spec: ResourceSpec, flt: _Filter) -> Obj:
        items = [obj for _, obj in self._live(spec) if flt.matches(obj)]
        items.sort(key=lambda o: (o["metadata"].get("namespace") or "", o["metadata"]["name"]))
        return {
            "apiVersion": spec.api_version,
            "kind": f"{spec.kind}List",
            "metadata": {"resourceVersion": str(self._rv)},
            "items": items,
        }

    def create_object(self, spec: ResourceSpec, namespace: str | None, body: Any) -> Obj:
        if not isinstance(body, dict) or not isinstance(body.get("metadata", {}), dict):
            raise _bad_request(f"the body of a {spec.kind} must be an object with metadata")
        obj = {"apiVersion": spec.api_version, "kind": spec.kind, **copy.deepcopy(body)}
        if (obj["apiVersion"], obj["kind"]) != (spec.api_version, spec.kind):
            raise _bad_request(
                f"{obj['apiVersion']}/{obj['kind']} cannot be created as {spec.qualified}"
            )
        meta = obj.setdefault("metadata", {})
        if spec.namespaced:
            namespace = namespace or meta.get("namespace")
            if not namespace or meta.get("namespace") not in (None, "", namespace):
                raise _bad_request(
                    "the namespace of the provided object does not match the namespace sent on "
                    "the request"
                )
            meta["namespace"] = namespace
        else:
            namespace = None
            meta.pop("namespace", None)
        prefix = meta.get("generateName")
        if not meta.get("name") and prefix and isinstance(prefix, str):
            meta["name"] = self._generate_name(spec, namespace, prefix)
        name = meta.get("name") or ""
        obj = self._decoded(spec, obj)
        if "status" in spec.subresources:  # status is only written through /status
            obj.pop("status", None)
        meta = obj["metadata"]
        errors = name_errors(meta, name_rule(spec.group, spec.plural))
        obj = self._validated(spec, name, obj, errors)
        meta = obj["metadata"]
        if self.read_object(spec, namespace, name) is not None:
            message = f'{spec.qualified} "{name}" already exists'
            raise ApiError(409, "AlreadyExists", message, _details(spec, name))
        for key in ("deletionTimestamp", "deletionGracePeriodSeconds", "resourceVersion"):
            meta.pop(key, None)
        meta.update(uid=str(uuid.uuid4()), creationTimestamp=_now(), generation=1)
        if spec == CRDS:
            _crd_specs(obj)
            obj["status"] = {
                "acceptedNames": obj["spec"]["names"],
                "conditions": [
                    {"type": t, "status": "True"} for t in ("NamesAccepted", "Established")
                ],
                "storedVersions": [v["name"] for v in obj["spec"].get("versions", [])],
            }
        meta["resourceVersion"] = self._bump()
        self._put(spec, obj)
        self._emit(spec, "ADDED", None, obj)
        if spec == CRDS:
            self._sync_crd(None, obj)
        return obj

    def _generate_name(self, spec: ResourceSpec, namespace: str | None, prefix: str) -> str:
        while True:
            name = prefix + "".join(random.choices(GENERATE_ALPHABET, k=5))
            if self.read_object(spec, namespace, name) is None:
                return name

    def _decoded(self, spec: ResourceSpec, obj: Obj) -> Obj:
        """The body as the server decodes it: metadata coerced to ObjectMeta's fields, and a
        custom resource pruned and defaulted by its schema."""
        obj = coerce_metadata(obj)
        schema = self.schemas.get(spec.key)
        return obj if schema is None else schema.normalize(obj)

    def _validated(self, spec: ResourceSpec, name: str, obj: Obj, errors: list[FieldError]) -> Obj:
        """Raise the 422 for ``errors`` plus the schema's; else the object as it is stored (a
        custom resource's numbers as Go writes them: 50.0 reads back as 50)."""
        schema = self.schemas.get(spec.key)
        if schema is not None:  # CEL rules (x-kubernetes-validations) are not evaluated: 1.20
            errors = errors + schema.validate(obj)
        if errors:
            raise _invalid_fields(spec, name, errors)
        return obj if schema is None else go_json_numbers(obj)

    def replace_object(self, route: _Route, body: Any) -> Obj:
        assert route.name is not None
        self._check_subresource(route)
        old = self._require(route.spec, route.namespace, route.name)
        return self._write(route.spec, old, copy.deepcopy(body), route.subresource)

    def patch_object(
        self, route: _Route, content_type: str, body: Any, params: Mapping[str, str]
    ) -> tuple[Obj, bool]:
        """Apply one PATCH; returns the result and whether it created the object (apply)."""
        assert route.name is not None
        self._check_subresource(route)
        spec, sub = route.spec, route.subresource
        if content_type == APPLY_PATCH:
            return self._apply(route, body, params)
        old = self._require(spec, route.namespace, route.name)
        base = self._scale_of(old) if sub == "scale" else old
        if content_type == JSON_PATCH:
            if not isinstance(body, list):
                raise _bad_request("a json-patch body must be a list of operations")
            try:
                candidate = jsonpatch.apply_patch(base, body)
            except jsonpatch.InvalidJsonPatch as exc:
                raise _bad_request(f"invalid json-patch: {exc}") from None
            except (jsonpatch.JsonPatchException, jsonpointer.JsonPointerException) as exc:
                raise _invalid(
                    spec, route.name, f"the json-patch cannot be applied: {exc}"
                ) from None
        elif content_type in (MERGE_PATCH, STRATEGIC_PATCH):
            if not isinstance(body, dict):
                raise _bad_request("a merge-patch body must be an object")
            candidate = _merge_patch(base, body)
        else:
            raise ApiError(
                415, "UnsupportedMediaType", f"the patch type {content_type!r} is not supported"
            )
        return self._write(spec, old, candidate, sub), False

    def _check_subresource(self, route: _Route) -> None:
        if route.subresource is not None and route.subresource not in route.spec.subresources:
            message = f"{route.spec.qualified} has no {route.subresource!r} subresource"
            raise ApiError(404, "NotFound", message)

    def _apply(self, route: _Route, body: Any, params: Mapping[str, str]) -> tuple[Obj, bool]:
        """Server-side apply: create if missing, else merge the applied fields in."""
        spec, name = route.spec, route.name
        assert name is not None
        if not params.get("fieldManager"):
            raise _bad_request(
                "PATCH requests of type application/apply-patch+yaml require the fieldManager "
                "query parameter"
            )
        if not isinstance(body, dict):
            raise _bad_request("an apply body must be an object")
        if route.subresource != "status" and (body.get("apiVersion"), body.get("kind")) != (
            spec.api_version,
            spec.kind,
        ):
            raise _bad_request(f"apply needs apiVersion {spec.api_version} and kind {spec.kind}")
        old = self.read_object(spec, route.namespace, name)
        if old is None:
            if route.subresource is not None:
                raise _not_found(spec, name)
            if body.get("metadata", {}).get("name") not in (None, name):
                raise _bad_request("the name of the object does not match the name on the URL")
            obj = _merge_patch(body, {"metadata": {"name": name}})
            return self.create_object(spec, route.namespace, obj), True
        return self._write(spec, old, _merge_patch(old, body), route.subresource), False

    def _write(self, spec: ResourceSpec, old: Obj, candidate: Any, sub: str | None) -> Obj:
        """Check the preconditions a client expressed in ``candidate``, then commit it."""
        name = old["metadata"]["name"]
        if not isinstance(candidate, dict) or not isinstance(candidate.get("metadata", {}), dict):
            raise _bad_request(f"the body of a {spec.kind} must be an object with metadata")
        meta, old_meta = candidate.get("metadata", {}), old["metadata"]
        if meta.get("name") not in (None, name):
            raise _bad_request(f"the name of the object ({meta['name']}) does not match {name!r}")
        if spec.namespaced and meta.get("namespace") not in (None, "", old_meta["namespace"]):
            raise _bad_request("the namespace of the object does not match the request's")
        if meta.get("uid") not in (None, "", old_meta["uid"]):
            raise _conflict(
                spec, name, f"Precondition failed: UID in object meta: {old_meta['uid']}"
            )
        if meta.get("resourceVersion") not in (None, "", old_meta["resourceVersion"]):
            raise _conflict(
                spec,
                name,
                "the object has been modified; please apply your changes to the latest version "
                "and try again",
            )
        if sub == "scale":
            replicas = (candidate.get("spec") or {}).get("replicas")
            scaled = _merge_patch(old, {"spec": {"replicas": replicas}})
            return self._scale_of(self._commit(spec, old, scaled, None))
        if sub is None and candidate.get("kind", old["kind"]) != old["kind"]:
            raise _bad_request(f"the kind {candidate['kind']} does not match {old['kind']}")
        return self._commit(spec, old, candidate, sub)

    def _commit(self, spec: ResourceSpec, old: Obj, candidate: Obj, sub: str | None) -> Obj:
        """Store a new state: server fields kept, status via /status only, no-ops skipped."""
        if sub == "status":
            new = copy.deepcopy(old)
            _set_or_pop(new, "status", copy.deepcopy(candidate.get("status")))
        else:
            new = copy.deepcopy(candidate)
            new["apiVersion"], new["kind"] = old["apiVersion"], old["kind"]
            meta = new.setdefault("metadata", {})
            for key in SERVER_MANAGED:
                _set_or_pop(meta, key, old["metadata"].get(key))
            if "status" in spec.subresources:
                _set_or_pop(new, "status", copy.deepcopy(old.get("status")))
        # Decoded, then validated as a whole (a status write too: 1.20 checks the object).
        new = self._validated(spec, old["metadata"]["name"], self._decoded(spec, new), [])
        if _without_version(new) == _without_version(old):
            return old  # like the API server: a write that changes nothing stores nothing
        meta, old_meta = new["metadata"], old["metadata"]
        added = set(meta.get("finalizers") or []) - set(old_meta.get("finalizers") or [])
        if old_meta.get("deletionTimestamp") and added:
            raise _invalid(
                spec, meta["name"], "no new finalizers can be added if the object is being deleted"
            )
        if spec == CRDS:
            _crd_specs(new)
        if _payload(new) != _payload(old):
            meta["generation"] = old_meta.get("generation", 0) + 1
        meta["resourceVersion"] = self._bump()
        self._put(spec, new)
        self._emit(spec, "MODIFIED", old, new)
        if spec == CRDS:
            self._sync_crd(old, new)
        if meta.get("deletionTimestamp") and not meta.get("finalizers"):
            return self._erase(spec, new)  # the last finalizer is gone: really delete
        return new

    def delete_object(
        self, spec: ResourceSpec, namespace: str | None, name: str, options: Mapping[str, Any]
    ) -> Obj:
        """Delete like the API server: finalizers defer it, owners take dependents along."""
        old = self._require(spec, namespace, name)
        meta = old["metadata"]
        preconditions = options.get("preconditions") or {}
        for key in ("uid", "resourceVersion"):
            if preconditions.get(key) not in (None, meta[key]):
                raise _conflict(
                    spec,
                    name,
                    f"Precondition failed: {key} in precondition does not match {meta[key]}",
                )
        if meta.get("deletionTimestamp"):
            return old
        if meta.get("finalizers"):
            new = copy.deepcopy(old)
            new["metadata"].update(
                deletionTimestamp=_now(),
                deletionGracePeriodSeconds=0,
                generation=meta.get("generation", 0) + 1,  # as markAsDeleting() does
                resourceVersion=self._bump(),
            )
            self._put(spec, new)
            self._emit(spec, "MODIFIED", old, new)
            return new
        return self._erase(spec, old, orphan=options.get("propagationPolicy") == "Orphan")

    def _erase(self, spec: ResourceSpec, obj: Obj, *, orphan: bool = False) -> Obj:
        """Really remove an object, then collect what only it owned (background GC)."""
        final = copy.deepcopy(obj)
        final["metadata"]["resourceVersion"] = self._bump()
        meta = final["metadata"]
        self.objects[self._key(spec, meta.get("namespace"), meta["name"])].delete()
        self._emit(spec, "DELETED", obj, final)
        if spec == CRDS:
            self._sync_crd(obj, None)
        if spec == NAMESPACES:  # the namespace controller empties a deleted namespace
            for other, child in list(self._live()):
                if other.namespaced and child["metadata"].get("namespace") == meta["name"]:
                    self._delete_quietly(other, child)
        if not orphan:
            live = {o["metadata"]["uid"] for _, o in self._live()}
            for other, child in list(self._live()):
                owners = {ref.get("uid") for ref in child["metadata"].get("ownerReferences") or []}
                if meta["uid"] in owners and not owners & live:
                    self._delete_quietly(other, child)
        return final

    def _delete_quietly(self, spec: ResourceSpec, obj: Obj) -> None:
        meta = obj["metadata"]
        if (
            self.read_object(spec, meta.get("namespace"), meta["name"]) is not None
        ):  # not gone already
            self.delete_object(spec, meta.get("namespace"), meta["name"], {})

    def _scale_of(self, obj: Obj) -> Obj:
        meta = obj["metadata"]
        return {
            "apiVersion": "autoscaling/v1",
            "kind": "Scale",
            "metadata": {k: meta[k] for k in ("name", "namespace", "uid", "resourceVersion")},
            "spec": {"replicas": obj.get("spec", {}).get("replicas", 1)},
            "status": {"replicas": obj.get("status", {}).get("replicas", 0)},
        }

    # -- HTTP -------------------------------------------------------------------------------

    async def __call__(self, raw: aiohttp.web.BaseRequest) -> aiohttp.web.StreamResponse:
        body = await raw.read()
        try:
            route = self._route(raw.path)
        except ApiError as exc:
            self._record(raw, body, None, None)
            return _error_response(exc)
        if route is None:  # discovery and /version: kmock's scaffold serves those
            if self._unserved_discovery(raw.path):
                self._record(raw, body, None, None)
                return _error_response(PageNotFound())
            if raw.method != "GET":
                return _error_response(ApiError(405, "MethodNotAllowed", "read-only endpoint"))
            if raw.path != "/" and raw.path.endswith("/"):  # the client asks for /version/
                raw = raw.clone(rel_url=raw.rel_url.with_path(raw.path.rstrip("/")))
            return await super().__call__(raw)
        try:
            data = _decode(body, raw.content_type)
        except ApiError as exc:
            self._record(raw, body, route, None)
            return _error_response(exc)
        self._record(raw, body, route, data)
        try:
            if raw.method == "GET" and raw.query.get("watch") in ("true", "1"):
                return await self._watch(route, raw)
            return self._serve(route, raw, data)
        except ApiError as exc:
            return _error_response(exc)
        except Exception as exc:
            self.internal_errors.append(traceback.format_exc())
            return _error_response(ApiError(500, "InternalError", repr(exc)))

    async def _render_error(self, exc: Exception) -> aiohttp.web.StreamResponse:
        # kmock's own errors (unknown discovery paths of built-in groups) as go-restful's
        # Status bodies; unserved custom groups never get here (see _unserved_discovery).
        if isinstance(exc, kmock.KubernetesError):
            if exc.status == 404:
                return _error_response(ApiError(404, "NotFound", NOT_FOUND_BUILTIN))
            reason = exc.reason or "InternalError"
            return _error_response(ApiError(exc.status, reason, exc.message or repr(exc)))
        self.internal_errors.append("".join(traceback.format_exception(exc)))
        return _error_response(ApiError(500, "InternalError", repr(exc)))

    def _route(self, path: str) -> _Route | None:
        """Parse a resource URL; None for non-resource paths, 404 for unknown resources."""
        parts = [p for p in path.split("/") if p]
        if len(parts) >= 2 and parts[0] == "api":
            group, version, rest = "", parts[1], parts[2:]
        elif len(parts) >= 3 and parts[0] == "apis":
            group, version, rest = parts[1], parts[2], parts[3:]
        else:
            return None
        if not rest:
            return None
        namespace = None
        # /api/v1/namespaces/{name}/status is the namespace itself, not a resource "status".
        own_subresource = group == "" and len(rest) == 3 and rest[2] in ("status", "finalize")
        if rest[0] == "namespaces" and len(rest) >= 3 and not own_subresource:
            namespace, rest = rest[1], rest[2:]
        plural, name = rest[0], rest[1] if len(rest) > 1 else None
        sub = "/".join(rest[2:]) or None
        spec = self.specs.get((group, version, plural))
        if (
            spec is None
            or (namespace is not None and not spec.namespaced)
            or (spec.namespaced and name is not None and namespace is None)
        ):
            # Built-in groups are go-restful's, which answers a Status; a CRD's handler passes
            # what it does not serve (another version or resource, the wrong scope, a group
            # without CRD) on to the mux, whose 404 is plain text.
            if _builtin_group(group):
                raise ApiError(404, "NotFound", NOT_FOUND_BUILTIN)
            raise PageNotFound()
        if sub is not None and sub not in spec.subresources:
            if spec.builtin:
                raise ApiError(404, "NotFound", NOT_FOUND_BUILTIN)
            raise _not_found(
                spec, name or ""
            )  # the CRD handler names the object, even if it exists
        return _Route(spec, namespace, name, sub)

    def _unserved_discovery(self, path: str) -> bool:
        """Whether ``/apis/<group>[/<version>]`` names a custom group/version nobody serves."""
        parts = [p for p in path.split("/") if p]
        if len(parts) not in (2, 3) or parts[0] != "apis" or _builtin_group(parts[1]):
            return False
        served = {(s.group, s.version) for s in self.specs.values()}
        if len(parts) == 2:
            return parts[1] not in {group for group, _ in served}
        return (parts[1], parts[2]) not in served

    def _record(
        self, raw: aiohttp.web.BaseRequest, body: bytes, route: _Route | None, data: Any
    ) -> None:
        """Keep the request in kmock's records, where ``KubeEmulator.requests`` reads them."""
        actions = {"POST": "CREATE", "PUT": "UPDATE", "PATCH": "UPDATE", "DELETE": "DELETE"}
        if raw.method == "GET":
            watch = raw.query.get("watch") in ("true", "1")
            action = "WATCH" if watch else "FETCH" if route and route.name else "LIST"
        else:
            action = actions.get(raw.method, "")
        request = kmock.Request(
            id=len(self._requests),
            method=raw.method,
            url=raw.url,
            params=dict(raw.query),
            headers=dict(raw.headers),
            body=body,
            text=body.decode(errors="replace"),
            data=data,
            action=kmock.action(action) if action and route else None,
            resource=route.spec.ref if route else None,
            namespace=route.namespace if route else None,
            name=route.name if route else None,
            subresource=route.subresource if route else None,
            raw_request=raw,
        )
        self._requests.append(request)

    def _serve(
        self, route: _Route, raw: aiohttp.web.BaseRequest, data: Any
    ) -> aiohttp.web.Response:
        spec, namespace, name, sub = route.spec, route.namespace, route.name, route.subresource
        method = raw.method
        if method == "GET" and name is None:
            return _json(self.list_objects(spec, _Filter.parse(namespace, None, raw.query)))
        if method == "POST" and name is None:
            return _json(self.create_object(spec, namespace, data), 201)
        if name is not None and method == "GET":
            obj = self._require(spec, namespace, name)
            return _json(self._scale_of(obj) if sub == "scale" else obj)
        if name is not None and method == "PUT":
            return _json(self.replace_object(route, data))
        if name is not None and method == "PATCH":
            obj, created = self.patch_object(route, raw.content_type, data, raw.query)
            return _json(obj, 201 if created else 200)
        if name is not None and method == "DELETE" and sub is None:
            options = {**(data if isinstance(data, dict) else {}), **raw.query}
            final = self.delete_object(spec, namespace, name, options)
            if spec.builtin and self.read_object(spec, namespace, name) is None:
                # Built-ins answer an immediate delete with a Status (the clients parse that).
                success = {"kind": "Status", "apiVersion": "v1", "metadata": {}}
                details = {**_details(spec, name), "uid": final["metadata"]["uid"]}
                return _json({**success, "status": "Success", "details": details})
            return _json(final)
        raise ApiError(405, "MethodNotAllowed", f"{method} is not allowed on {raw.path}")

    async def _watch(
        self, route: _Route, raw: aiohttp.web.BaseRequest
    ) -> aiohttp.web.StreamResponse:
        """Stream events: a replay (of the current objects, or of the changes since the given
        resourceVersion), then live events, bookmarks if allowed, until timeoutSeconds."""
        params, spec = raw.query, route.spec
        watcher = _Watcher(spec, _Filter.parse(route.namespace, route.name, params))
        since = params.get("resourceVersion") or "0"
        if not since.isdigit():
            raise _bad_request(f"invalid resourceVersion {since!r}")
        try:
            timeout = float(params["timeoutSeconds"]) if params.get("timeoutSeconds") else None
        except ValueError:
            raise _bad_request(f"invalid timeoutSeconds {params['timeoutSeconds']!r}") from None
        bookmarks = params.get("allowWatchBookmarks") == "true"
        backlog: list[Obj]
        if since == "0" or params.get("sendInitialEvents") == "true":
            objs = self.list_objects(spec, watcher.filter)["items"]
            backlog = [{"type": "ADDED", "object": obj} for obj in objs]
            if params.get("sendInitialEvents") == "true":
                backlog.append(self._bookmark(spec, initial_events_end=True))
        else:
            events = (e for e in self._log if e.rv > int(since) and e.key == spec.key)
            backlog = [t for e in events if (t := watcher.translate(e)) is not None]
        if not self._closing:
            self._watchers.add(watcher)
        response = aiohttp.web.StreamResponse(headers={"Content-Type": "application/json"})
        loop = asyncio.get_running_loop()
        deadline = None if timeout is None else loop.time() + timeout
        try:
            await response.prepare(raw)
            for replayed in backlog:
                await response.write(json.dumps(replayed).encode() + b"\n")
            while watcher in self._watchers:
                wait = self.bookmark_interval if bookmarks else None
                if deadline is not None:
                    left = deadline - loop.time()
                    if left <= 0:
                        break
                    wait = left if wait is None else min(wait, left)
                event: Obj | None
                try:
                    event = await asyncio.wait_for(watcher.queue.get(), wait)
                except TimeoutError:
                    if not bookmarks or (deadline is not None and loop.time() >= deadline):
                        continue
                    event = self._bookmark(spec)
                if event is None:  # the server is stopping
                    break
                await response.write(json.dumps(event).encode() + b"\n")
            await response.write_eof()
        except ConnectionError:
            pass  # the client went away
        finally:
            self._watchers.discard(watcher)
        return response

    def _bookmark(self, spec: ResourceSpec, *, initial_events_end: bool = False) -> Obj:
        meta: Obj = {"resourceVersion": str(self._rv)}
        if initial_events_end:
            meta["annotations"] = {"k8s.io/initial-events-end": "true"}
        obj = {"apiVersion": spec.api_version, "kind": spec.kind, "metadata": meta}
        return {"type": "BOOKMARK", "object": obj}

    def close_watches(self) -> None:
        """End all watch streams, so the HTTP server can shut down without waiting on them."""
        self._closing = True
        for watcher in self._watchers:
            watcher.queue.put_nowait(None)
        self._watchers.clear()


def _json(data: Obj, status: int = 200) -> aiohttp.web.Response:
    return aiohttp.web.json_response(data, status=status)


def _error_response(exc: ApiError) -> aiohttp.web.Response:
    if isinstance(exc, PageNotFound):
        headers = {"Content-Type": "text/plain; charset=utf-8", "X-Content-Type-Options": "nosniff"}
        return aiohttp.web.Response(status=exc.code, body=exc.BODY, headers=headers)
    return aiohttp.web.json_response(exc.status(), status=exc.code)


class RequestLog:
    """The HTTP requests clients made, oldest first, as kmock recorded them.

    The helpers of ``KubeEmulator`` do not go through HTTP and so are not in here: a test can
    seed objects and then assert on what the operator alone wrote.
    """

    WRITES = frozenset({"POST", "PUT", "PATCH", "DELETE"})

    def __init__(self, server: ApiServer) -> None:
        self._server = server

    def __iter__(self) -> Iterator[kmock.Request]:
        return iter(list(self._server))  # a snapshot: the loop thread keeps appending

    def __len__(self) -> int:
        return len(list(self._server))

    def writes(
        self, *, method: str | None = None, plural: str | None = None, since: int = 0
    ) -> list[kmock.Request]:
        """Write requests after the first ``since`` requests (``since=len(log)`` marks a point),
        optionally only of one HTTP method and/or one resource plural."""
        return [
            request
            for request in list(self)[since:]
            if request.method.value in self.WRITES
            and (method is None or request.method.value == method.upper())
            and (
                plural is None
                or (request.resource is not None and request.resource.plural == plural)
            )
        ]


class KubeEmulator:
    """``ApiServer`` on ``127.0.0.1:<free port>`` in a daemon thread, plus a kubeconfig.

    Use as a context manager. The helpers are thread-safe: they run inside the server's loop
    (not over HTTP), see the same state as HTTP clients, and return deep copies. They raise
    ``ApiError`` where the API would answer with an error.
    """

    def __init__(
        self,
        tmp_dir: Path,
        *,
        extra_resources: Iterable[ResourceSpec] = (),
        crds: Iterable[Mapping[str, Any]] | None = None,
    ) -> None:
        """``crds``: the CustomResourceDefinitions installed at start (default: the chart's,
        read now); the custom ``DEFAULT_RESOURCES`` they do not define get schemaless CRDs."""
        self.tmp_dir = tmp_dir
        self.kubeconfig = tmp_dir / "kubeconfig"
        self.url = ""
        self._resources = [*DEFAULT_RESOURCES, *extra_resources]
        self._crds = load_crds() if crds is None else [dict(crd) for crd in crds]
        self._server: ApiServer | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stopping: asyncio.Event | None = None
        self._thread: threading.Thread | None = None
        self._ready = threading.Event()
        self._failure: BaseException | None = None

    # -- lifecycle --------------------------------------------------------------------------

    def __enter__(self) -> Self:
        self._thread = threading.Thread(target=self._main, name="kube-emulator", daemon=True)
        self._thread.start()
        if not self._ready.wait(timeout=30) or self._failure is not None:
            self._shutdown()
            raise RuntimeError("the Kubernetes emulator did not start") from self._failure
        try:
            self._write_kubeconfig()
        except BaseException:
            self._shutdown()
            raise
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._shutdown()
        errors = self._server.internal_errors if self._server is not None else []
        if exc is None and errors:
            raise AssertionError("the Kubernetes emulator failed internally:\n" + "\n".join(errors))

    def _main(self) -> None:
        try:
            asyncio.run(self._serve())
        except BaseException as exc:  # reported by __enter__; a thread must not die loudly
            self._failure = exc
        finally:
            self._ready.set()

    async def _serve(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._stopping = asyncio.Event()
        server = ApiServer(self._resources, self._crds)
        async with server, kmock.Server(server, host="127.0.0.1") as http:
            self._server = server
            self.url = f"http://127.0.0.1:{http.port}"
            self._ready.set()
            await self._stopping.wait()
            server.close_watches()

    def _shutdown(self) -> None:
        if self._loop is not None and self._stopping is not None and not self._loop.is_closed():
            self._loop.call_soon_threadsafe(self._stopping.set)
        if self._thread is not None:
            self._thread.join(timeout=30)

    def _write_kubeconfig(self) -> None:
        name = "kube-emulator"
        self.tmp_dir.mkdir(parents=True, exist_ok=True)
        config = {
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [{"name": name, "cluster": {"server": self.url}}],
            "users": [{"name": name, "user": {"token": "kube-emulator-token"}}],
            "contexts": [
                {"name": name, "context": {"cluster": name, "user": name, "namespace": "default"}}
            ],
            "current-context": name,
        }
        self.kubeconfig.write_text(yaml.safe_dump(config))

    @property
    def server(self) -> ApiServer:
        """The kmock handler (its ``objects`` keep every version); touch it only via ``call``."""
        if self._server is None:
            raise RuntimeError("the Kubernetes emulator is not running")
        return self._server

    @property
    def requests(self) -> RequestLog:
        return RequestLog(self.server)

    def call(self, fn: Callable[[ApiServer], T]) -> T:
        """Run ``fn(server)`` inside the server's loop, atomically with respect to requests."""
        server, loop = self.server, self._loop
        assert loop is not None

        async def run() -> T:
            return fn(server)

        return asyncio.run_coroutine_threadsafe(run(), loop).result(timeout=30)

    # -- helpers for tests ------------------------------------------------------------------

    def add_resource(self, spec: ResourceSpec) -> None:
        """Serve one more resource (a custom one gets its CRD object, as kopf watches those)."""
        if self._server is None:
            self._resources.append(spec)
        else:
            self.call(lambda server: server.add_resource(spec))

    def create(self, obj: Mapping[str, Any]) -> Obj:
        def run(server: ApiServer) -> Obj:
            spec = server.spec_for(str(obj.get("apiVersion")), str(obj.get("kind")))
            namespace = (obj.get("metadata") or {}).get("namespace") or "default"
            return copy.deepcopy(server.create_object(spec, namespace, dict(obj)))

        return self.call(run)

    def get(
        self, api_version: str, kind_or_plural: str, name: str, namespace: str | None = "default"
    ) -> Obj | None:
        def run(server: ApiServer) -> Obj | None:
            obj = server.read_object(server.spec_for(api_version, kind_or_plural), namespace, name)
            return copy.deepcopy(obj)

        return self.call(run)

    def list(
        self,
        api_version: str,
        kind_or_plural: str,
        namespace: str | None = "default",
        label_selector: str | None = None,
    ) -> builtins.list[Obj]:  # `list` is this method inside the class body
        """Objects of one resource; ``namespace=None`` lists all namespaces."""

        def run(server: ApiServer) -> list[Obj]:
            spec = server.spec_for(api_version, kind_or_plural)
            flt = _Filter(
                namespace if spec.namespaced else None, parse_label_selector(label_selector)
            )
            return copy.deepcopy(server.list_objects(spec, flt)["items"])

        return self.call(run)

    def patch(
        self,
        api_version: str,
        kind_or_plural: str,
        name: str,
        patch: Mapping[str, Any],
        namespace: str | None = "default",
        subresource: str | None = None,
    ) -> Obj:
        """A merge patch, to the object or to a subresource (``"status"``)."""

        def run(server: ApiServer) -> Obj:
            spec = server.spec_for(api_version, kind_or_plural)
            route = _Route(spec, namespace if spec.namespaced else None, name, subresource)
            return copy.deepcopy(server.patch_object(route, MERGE_PATCH, dict(patch), {})[0])

        return self.call(run)

    def delete(
        self, api_version: str, kind_or_plural: str, name: str, namespace: str | None = "default"
    ) -> None:
        """Delete as a client would: finalizers defer it, dependents are collected."""

        def run(server: ApiServer) -> None:
            spec = server.spec_for(api_version, kind_or_plural)
            server.delete_object(spec, namespace if spec.namespaced else None, name, {})

        self.call(run)

    def wait_for(
        self, predicate: Callable[[], T | bool | None], timeout: float = 10.0, what: str = "..."
    ) -> T:
        """Poll until ``predicate()`` is truthy and return that; fail naming ``what``."""
        deadline = time.monotonic() + timeout
        while True:
            result = predicate()
            if result:
                return result  # type: ignore[return-value]  # truthy: neither None nor False
            if time.monotonic() >= deadline:
                raise AssertionError(f"timed out after {timeout}s waiting for {what}")
            time.sleep(0.05)
