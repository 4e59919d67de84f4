"""The chart rendered offline through the Helm SDK (in process), once per scenario file.

Helm's render leaves ``crds/`` out; the SDK's chart object still carries those files, so the
CRDs are read from it rather than from disk, as an install would.
"""

from __future__ import annotations

import functools
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import helm_python as helm
import yaml

ROOT = Path(__file__).resolve().parents[3]
CHART = ROOT / "charts" / "cascade"
SCENARIOS = sorted(p.stem.removesuffix("-values") for p in (CHART / "ci").glob("*-values.yaml"))
RELEASE = "cascade"
NAMESPACE = "cascade"

Manifest = dict[str, Any]


@functools.cache
def chart() -> helm.Chart:
    return helm.Chart.load(CHART)


def scenario_values(name: str) -> dict[str, Any]:
    values = yaml.safe_load((CHART / "ci" / f"{name}-values.yaml").read_text())
    return values or {}


def render(values: dict[str, Any] | None = None) -> list[Manifest]:
    """Every document the templates produce (NOTES.txt aside), in template order."""
    rendered = chart().render(values=values or None, name=RELEASE, namespace=NAMESPACE)
    docs: list[Manifest] = []
    for template in sorted(rendered):
        if template.endswith("NOTES.txt"):
            continue
        docs.extend(doc for doc in yaml.safe_load_all(rendered[template]) if doc)
    return docs


@functools.cache
def _rendered_scenario(name: str) -> tuple[Manifest, ...]:
    return tuple(render(scenario_values(name)))


def scenario(name: str) -> list[Manifest]:
    """The documents of ``ci/<name>-values.yaml`` (rendered once, copied per caller)."""
    return [dict(doc) for doc in _rendered_scenario(name)]


def notes(values: dict[str, Any] | None = None) -> str:
    rendered = chart().render(values=values or None, name=RELEASE, namespace=NAMESPACE)
    return next(text for template, text in rendered.items() if template.endswith("NOTES.txt"))


def crds() -> list[Manifest]:
    """The CustomResourceDefinitions the chart ships in ``crds/``."""
    return [doc for entry in chart().crds for doc in yaml.safe_load_all(entry["data"]) if doc]


def of_kind(docs: list[Manifest], kind: str) -> list[Manifest]:
    return [doc for doc in docs if doc["kind"] == kind]


def one(docs: list[Manifest], kind: str, name: str | None = None) -> Manifest:
    found = [d for d in of_kind(docs, kind) if name is None or d["metadata"]["name"] == name]
    assert len(found) == 1, f"expected one {kind} {name or ''}, found {len(found)}"
    return found[0]


def pod_specs(doc: Manifest) -> Iterator[tuple[str, dict[str, Any]]]:
    """(where, pod spec) for every pod template a manifest carries, KubeRay's included."""
    kind, name = doc["kind"], doc["metadata"]["name"]
    spec = doc.get("spec", {})
    if kind == "Pod":
        yield f"Pod/{name}", spec
    elif kind in ("Deployment", "StatefulSet", "DaemonSet", "ReplicaSet", "Job"):
        yield f"{kind}/{name}", spec["template"]["spec"]
    elif kind == "CronJob":
        yield f"CronJob/{name}", spec["jobTemplate"]["spec"]["template"]["spec"]
    elif kind == "RayService":
        cluster = spec["rayClusterConfig"]
        yield f"RayService/{name}/head", cluster["headGroupSpec"]["template"]["spec"]
        for group in cluster["workerGroupSpecs"]:
            yield f"RayService/{name}/{group['groupName']}", group["template"]["spec"]


def count_pod_specs(node: Any) -> int:
    """Objects anywhere in a manifest that hold ``containers``: each is a pod spec."""
    if isinstance(node, dict):
        return int("containers" in node) + sum(count_pod_specs(v) for v in node.values())
    if isinstance(node, list):
        return sum(count_pod_specs(v) for v in node)
    return 0
