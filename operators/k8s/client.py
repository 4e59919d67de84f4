"""The operator's one adapter to the Kubernetes API.

kopf watches and patches the resources it handles; everything else the operator writes (the
graph's children, status with a resourceVersion precondition, deletions of stale children) goes
through :class:`Kube`, over aiohttp, with credentials from the standard kubeconfig / in-cluster
loading of the ``kubernetes`` package. Children are written with server-side apply, so applying
the same rendering twice changes nothing and fields other managers own are left alone.

API failures become :class:`KubeError` (``NotFound``, ``Conflict``), so callers decide on
Kubernetes' terms (retry on conflict) instead of on HTTP status codes.
"""

from __future__ import annotations

import contextlib
import json
import ssl
from dataclasses import dataclass
from types import TracebackType
from typing import Any, Self
from urllib.parse import quote

import aiohttp

FIELD_MANAGER = "cascade-operator"


class KubeError(Exception):
    """An API call failed; ``status`` and ``reason`` are the API server's."""

    def __init__(self, status: int, reason: str, message: str) -> None:
        super().__init__(f"{status} {reason}: {message}")
        self.status, self.reason, self.message = status, reason, message


class NotFound(KubeError):
    pass


class Conflict(KubeError):
    """A write lost a race (stale resourceVersion): read again and retry."""


@dataclass(frozen=True)
class Resource:
    api_version: str
    plural: str
    namespaced: bool = True

    def path(self, namespace: str | None, name: str | None = None, sub: str | None = None) -> str:
        base = "/api/v1" if self.api_version == "v1" else f"/apis/{self.api_version}"
        ns = f"/namespaces/{quote(namespace)}" if self.namespaced and namespace else ""
        out = f"{base}{ns}/{self.plural}"
        if name is not None:
            out += f"/{quote(name)}"
        if sub is not None:
            out += f"/{sub}"
        return out


#: (apiVersion, kind) -> resource, for everything the operator reads or writes.
KINDS: dict[tuple[str, str], Resource] = {
    ("v1", "ConfigMap"): Resource("v1", "configmaps"),
    ("v1", "Service"): Resource("v1", "services"),
    ("apps/v1", "Deployment"): Resource("apps/v1", "deployments"),
    ("policy/v1", "PodDisruptionBudget"): Resource("policy/v1", "poddisruptionbudgets"),
    ("monitoring.coreos.com/v1", "ServiceMonitor"): Resource(
        "monitoring.coreos.com/v1", "servicemonitors"
    ),
    ("serving.cascade.dev/v1alpha1", "Model"): Resource("serving.cascade.dev/v1alpha1", "models"),
    ("serving.cascade.dev/v1alpha1", "InferenceGraph"): Resource(
        "serving.cascade.dev/v1alpha1", "inferencegraphs"
    ),
    ("serving.cascade.dev/v1alpha1", "Experiment"): Resource(
        "serving.cascade.dev/v1alpha1", "experiments"
    ),
}


def resource_of(obj: dict[str, Any]) -> Resource:
    key = (obj["apiVersion"], obj["kind"])
    if key not in KINDS:
        raise KeyError(f"the operator does not handle {key[1]} ({key[0]})")
    return KINDS[key]


def resource(api_version: str, kind: str) -> Resource:
    return KINDS[(api_version, kind)]


class Kube:
    """A small async client for the calls the operator makes."""

    def __init__(
        self,
        server: str,
        *,
        token: str | None = None,
        ssl_context: ssl.SSLContext | bool = True,
        timeout_s: float = 10.0,
    ) -> None:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        self._server = server.rstrip("/")
        self._session = aiohttp.ClientSession(
            headers=headers,
            timeout=aiohttp.ClientTimeout(total=timeout_s),
            connector=aiohttp.TCPConnector(ssl=ssl_context),
        )

    @classmethod
    def from_environment(cls) -> Kube:
        """In-cluster service account if there is one, else ``$KUBECONFIG`` / ~/.kube/config."""
        from kubernetes import client, config

        cfg = client.Configuration()
        try:
            config.load_incluster_config(client_configuration=cfg)
        except config.ConfigException:
            config.load_kube_config(client_configuration=cfg)
        token = cfg.api_key.get("authorization") or cfg.api_key.get("BearerToken")
        if token and token.lower().startswith("bearer "):
            token = token.split(" ", 1)[1]
        context: ssl.SSLContext | bool = True
        if cfg.host.startswith("https"):
            if not cfg.verify_ssl:
                context = False
            else:
                context = ssl.create_default_context(cafile=cfg.ssl_ca_cert)
                if cfg.cert_file:
                    context.load_cert_chain(cfg.cert_file, cfg.key_file)
        return cls(cfg.host, token=token, ssl_context=context)

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    async def close(self) -> None:
        await self._session.close()

    async def _call(
        self,
        method: str,
        path: str,
        *,
        body: Any = None,
        content_type: str = "application/json",
        params: dict[str, str] | None = None,
    ) -> dict[str, Any]:
        data = None if body is None else json.dumps(body)
        headers = {"Content-Type": content_type} if body is not None else {}
        try:
            async with self._session.request(
                method, self._server + path, data=data, headers=headers, params=params
            ) as response:
                text = await response.text()
                status = response.status
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise KubeError(0, "Unreachable", f"{method} {path}: {exc!r}") from exc
        if status >= 400:
            reason, message = _failure(status, text)
            kind = NotFound if status == 404 else Conflict if status == 409 else KubeError
            raise kind(status, reason, f"{method} {path}: {message}")
        try:
            payload: dict[str, Any] = json.loads(text) if text else {}
        except ValueError as exc:
            raise KubeError(
                status, "BadResponse", f"{method} {path}: not JSON: {text[:200]!r}"
            ) from exc
        return payload

    async def get(self, res: Resource, namespace: str | None, name: str) -> dict[str, Any] | None:
        try:
            return await self._call("GET", res.path(namespace, name))
        except NotFound:
            return None

    async def list(
        self, res: Resource, namespace: str | None, label_selector: str | None = None
    ) -> list[dict[str, Any]]:
        params = {"labelSelector": label_selector} if label_selector else None
        payload = await self._call("GET", res.path(namespace), params=params)
        return list(payload.get("items", []))

    async def apply(self, obj: dict[str, Any]) -> dict[str, Any]:
        """Server-side apply of a full manifest, forcing ownership of the fields it names."""
        meta = obj["metadata"]
        res = resource_of(obj)
        return await self._call(
            "PATCH",
            res.path(meta.get("namespace"), meta["name"]),
            body=obj,
            content_type="application/apply-patch+yaml",
            params={"fieldManager": FIELD_MANAGER, "force": "true"},
        )

    async def patch_status(
        self,
        res: Resource,
        namespace: str,
        name: str,
        status: dict[str, Any],
        *,
        resource_version: str | None = None,
    ) -> dict[str, Any]:
        """Merge ``status`` in; with ``resource_version``, only if nobody wrote since (409)."""
        body: dict[str, Any] = {"status": status}
        if resource_version is not None:
            body["metadata"] = {"resourceVersion": resource_version}
        return await self._call(
            "PATCH",
            res.path(namespace, name, "status"),
            body=body,
            content_type="application/merge-patch+json",
        )

    async def delete(self, res: Resource, namespace: str | None, name: str) -> None:
        with contextlib.suppress(NotFound):
            await self._call(
                "DELETE",
                res.path(namespace, name),
                body={
                    "kind": "DeleteOptions",
                    "apiVersion": "v1",
                    "propagationPolicy": "Background",
                },
            )

    async def serves(self, api_version: str, plural: str) -> bool:
        """Whether the cluster serves ``plural`` in ``api_version`` (is the CRD installed?).

        An API group nobody installed is a 404 (in plain text, from a real server): ``False``.
        Other failures (no permission, an aggregated API down) raise, so a caller never
        mistakes a broken cluster for a missing optional API.
        """
        path = "/api/v1" if api_version == "v1" else f"/apis/{api_version}"
        try:
            payload = await self._call("GET", path)
        except NotFound:
            return False
        return any(r.get("name") == plural for r in payload.get("resources", []))


def _failure(status: int, text: str) -> tuple[str, str]:
    """(reason, message) of a failed call. The API server answers with a JSON ``Status``, but
    not always: an unserved API group is a plain-text ``404 page not found``, and a proxy in
    front of the server may answer in HTML."""
    try:
        payload = json.loads(text) if text else {}
    except ValueError:
        payload = None
    if isinstance(payload, dict) and payload.get("kind") == "Status":
        return str(payload.get("reason") or "Error"), str(payload.get("message") or text[:500])
    reason = {404: "NotFound", 409: "Conflict", 403: "Forbidden", 401: "Unauthorized"}
    return reason.get(status, "Error"), text.strip()[:500] or f"HTTP {status}"
