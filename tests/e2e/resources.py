"""Small helpers the e2e scenarios share: paths, conditions, namespaces, the kubelet's part."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any
from urllib.parse import quote

from tests.e2e.cluster import ApiError, ControlPlane

GROUP_PATH = "/apis/serving.cascade.dev/v1alpha1"
PLURALS = {"Model": "models", "InferenceGraph": "inferencegraphs", "Experiment": "experiments"}


def cr_path(ns: str, kind: str, name: str | None = None) -> str:
    path = f"{GROUP_PATH}/namespaces/{ns}/{PLURALS[kind]}"
    return path if name is None else f"{path}/{name}"


def condition(obj: dict[str, Any] | None, type_: str) -> dict[str, Any] | None:
    for c in ((obj or {}).get("status") or {}).get("conditions") or []:
        if c.get("type") == type_:
            return dict(c)
    return None


def wait_condition(
    cp: ControlPlane,
    ns: str,
    kind: str,
    name: str,
    type_: str,
    status: str,
    *,
    reason: str | None = None,
    timeout: float = 60,
) -> dict[str, Any]:
    """The object once its ``type_`` condition has ``status`` (and ``reason``)."""

    def probe() -> dict[str, Any] | None:
        obj = cp.get(cr_path(ns, kind, name))
        c = condition(obj, type_)
        if c and c["status"] == status and (reason is None or c["reason"] == reason):
            return dict(obj)
        return None

    try:
        return cp.wait_for(probe, timeout, f"{kind} {ns}/{name} {type_}={status}")
    except TimeoutError as err:
        last = cp.get(cr_path(ns, kind, name))
        raise AssertionError(f"{err}; status now: {(last or {}).get('status')}") from None


def create_namespace(cp: ControlPlane, ns: str) -> None:
    try:
        cp.request("POST", "/api/v1/namespaces", {"metadata": {"name": ns}})
    except ApiError as err:
        if err.status != 409:
            raise


def create(cp: ControlPlane, ns: str, obj: dict[str, Any]) -> dict[str, Any]:
    result: dict[str, Any] = cp.request("POST", cr_path(ns, obj["kind"]), obj)
    return result


def merge_patch(cp: ControlPlane, path: str, patch: dict[str, Any]) -> dict[str, Any]:
    result: dict[str, Any] = cp.request(
        "PATCH", path, patch, content_type="application/merge-patch+json"
    )
    return result


def events(cp: ControlPlane, ns: str) -> list[tuple[str, str, str]]:
    """(involved object name, reason, message) of every event in ``ns``."""
    found = cp.get(f"/api/v1/namespaces/{ns}/events") or {}
    return [
        (e["involvedObject"].get("name", ""), e.get("reason", ""), e.get("message", ""))
        for e in found.get("items", [])
    ]


def mark_pods_ready(cp: ControlPlane, ns: str, selector: str) -> int:
    """Plays the kubelet: every pod matching ``selector`` reports Running and Ready.

    No kubelet runs here, so pods stay Pending; the ReplicaSet and Deployment controllers then
    count these pods as available exactly as they would count a kubelet's report.
    """
    pods = cp.get(f"/api/v1/namespaces/{ns}/pods?labelSelector={quote(selector)}") or {}
    now = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    ready = [
        {"type": t, "status": "True", "lastTransitionTime": now}
        for t in ("Initialized", "ContainersReady", "Ready", "PodScheduled")
    ]
    for pod in pods.get("items", []):
        if pod["metadata"].get("deletionTimestamp"):
            continue
        name = pod["metadata"]["name"]
        cp.request(
            "PATCH",
            f"/api/v1/namespaces/{ns}/pods/{name}/status",
            {"status": {"phase": "Running", "conditions": ready, "startTime": now}},
            content_type="application/merge-patch+json",
        )
    return len(pods.get("items", []))
