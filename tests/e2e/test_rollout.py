"""A canary rollout through every step against the real server: scripted Prometheus, real
``ab_router`` reports, an operator restart mid-canary that resumes from status, a rollback.

The chart's operator makes every write here with the chart's RBAC; status is written with a
resourceVersion precondition, so the real server's 409s are part of what is exercised.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
import yaml

from tests.e2e.cluster import ControlPlane
from tests.e2e.conftest import API
from tests.e2e.pods import PodProcess
from tests.e2e.resources import (
    condition,
    cr_path,
    create,
    create_namespace,
    events,
    mark_pods_ready,
    merge_patch,
    wait_condition,
)
from tests.integration.metrics_feed import MetricsFeed, business_report

NS = "rollout"
MODELS = ("user-tower", "ranker-dcn", "ranker-mlp", "combiner")
HEALTHY = {"requests": 500.0, "error_rate": 0.0, "p99_ms": 20.0}
CANARY = {"steps": [10, 50, 100], "intervalSeconds": 2, "minRequests": 10}


@pytest.fixture(scope="module", autouse=True)
def graph(control_plane: ControlPlane, operator: PodProcess) -> str:
    create_namespace(control_plane, NS)
    for name in MODELS:
        spec: dict[str, Any] = {"storageUri": f"file:///models/{name}", "version": 1}
        if name == "ranker-dcn":
            spec["canary"] = CANARY
        create(control_plane, NS, {"apiVersion": API, "kind": "Model",
                                   "metadata": {"name": name}, "spec": spec})  # fmt: skip
    create(
        control_plane,
        NS,
        {
            "apiVersion": API,
            "kind": "InferenceGraph",
            "metadata": {"name": "recs"},
            "spec": {"modelRepository": {"build": {}}},
        },
    )
    control_plane.wait_for(
        lambda: mark_pods_ready(control_plane, NS, "serving.cascade.dev/graph=recs") >= 2,
        60,
        "the graph's pods",
    )
    wait_condition(control_plane, NS, "InferenceGraph", "recs", "Ready", "True", timeout=60)
    return "recs"


@pytest.fixture(autouse=True)
def _fresh_feed(feed: MetricsFeed) -> None:
    feed.values.clear()
    feed.reports.clear()


def status(cp: ControlPlane) -> dict[str, Any]:
    obj = cp.get(cr_path(NS, "Model", "ranker-dcn")) or {}
    return dict(obj.get("status") or {})


def router_weight(cp: ControlPlane) -> int | None:
    cm = cp.get(f"/api/v1/namespaces/{NS}/configmaps/recs-router")
    catalog = yaml.safe_load(cm["data"]["experiments.yaml"]) if cm else {"layers": []}
    for layer in catalog["layers"]:
        for exp in layer["experiments"]:
            if exp["name"] == "canary-ranker-dcn":
                return int(next(v["weight"] for v in exp["variants"] if v["name"] == "canary"))
    return None


def pinned(cp: ControlPlane) -> int:
    cm = cp.get(f"/api/v1/namespaces/{NS}/configmaps/recs-config")
    return int(yaml.safe_load(cm["data"]["graph.yaml"])["model_versions"]["ranker_dcn"])


def bump(cp: ControlPlane, version: int) -> None:
    merge_patch(cp, cr_path(NS, "Model", "ranker-dcn"), {"spec": {"version": version}})


def track(cp: ControlPlane, until: Callable[[dict[str, Any]], bool]) -> Callable[[], bool]:
    """A probe that records every canary weight the router ConfigMap showed."""
    seen: list[int] = []

    def probe() -> bool:
        w = router_weight(cp)
        if w is not None and (not seen or seen[-1] != w):
            seen.append(w)
        return until(status(cp))

    probe.seen = seen  # type: ignore[attr-defined]
    return probe


def test_healthy_canary_goes_through_every_step_and_promotes(
    control_plane: ControlPlane, feed: MetricsFeed
) -> None:
    feed.set(**HEALTHY)
    feed.set_report("canary-ranker-dcn", business_report(0.10, 0.10))
    bump(control_plane, 2)
    probe = track(
        control_plane,
        lambda s: (s.get("canary") or {}).get("phase") == "Promoted" and s["servingVersion"] == 2,
    )
    control_plane.wait_for(probe, 60, "the canary to promote")
    assert probe.seen[:2] == [10, 50], probe.seen  # type: ignore[attr-defined]
    control_plane.wait_for(lambda: pinned(control_plane) == 2, 30, "v2 pinned in the config")
    control_plane.wait_for(lambda: router_weight(control_plane) is None, 30, "the split to end")
    reasons = {r for n, r, _ in events(control_plane, NS) if n == "ranker-dcn"}
    assert {"CanaryStarted", "CanaryAdvance", "CanaryPromote"} <= reasons
    ready = condition(control_plane.get(cr_path(NS, "Model", "ranker-dcn")), "Ready")
    assert ready is not None
    assert ready["status"] == "True"


def test_a_restarted_operator_resumes_mid_canary(
    control_plane: ControlPlane, feed: MetricsFeed, operator: PodProcess
) -> None:
    feed.set(**HEALTHY)
    bump(control_plane, 3)
    control_plane.wait_for(lambda: router_weight(control_plane) == 50, 60, "the second step")
    operator.stop()
    before = status(control_plane)["canary"]
    assert (before["version"], before["phase"], before["weight"]) == (3, "Progressing", 50)

    operator.start()
    probe = track(control_plane, lambda s: (s.get("canary") or {}).get("phase") == "Promoted")
    control_plane.wait_for(probe, 90, "the canary to promote after the restart")
    assert min(probe.seen, default=50) >= 50, probe.seen  # type: ignore[attr-defined]
    after = status(control_plane)
    assert after["canary"]["startedAt"] == before["startedAt"]  # the same rollout, resumed
    assert after["servingVersion"] == 3


def test_bad_evidence_rolls_back_and_the_last_good_version_serves(
    control_plane: ControlPlane, feed: MetricsFeed
) -> None:
    feed.set(**{**HEALTHY, "error_rate": 0.2})
    serving = status(control_plane)["servingVersion"]
    bump(control_plane, serving + 1)
    control_plane.wait_for(
        lambda: (status(control_plane).get("canary") or {}).get("phase") == "RolledBack",
        60,
        "the rollback",
    )
    after = status(control_plane)
    assert after["servingVersion"] == serving
    assert "error rate 20.00% is above 1.00%" in after["canary"]["reason"]
    ready = condition(control_plane.get(cr_path(NS, "Model", "ranker-dcn")), "Ready")
    assert ready is not None
    assert (ready["status"], ready["reason"]) == ("False", "RolledBack")
    control_plane.wait_for(lambda: router_weight(control_plane) is None, 30, "the split to end")
    assert pinned(control_plane) == serving
    assert any(r == "CanaryRollback" for n, r, _ in events(control_plane, NS) if n == "ranker-dcn")
