"""Dashboards and alerts read only metrics the code exports.

A renamed metric leaves a dashboard panel empty and an alert silent without any error, so every
PromQL expression the chart ships is checked against the names registered in
``prometheus_client`` by the data plane and the operator.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import REGISTRY

import inference.metrics  # noqa: F401 (importing registers the data plane's metrics)
import operators.metrics  # noqa: F401 (and the operator's)
from tests.unit.charts.promql import grafana_query_metrics, metric_names, tokens
from tests.unit.charts.rendering import CHART, of_kind, one, scenario

DASHBOARDS = sorted((CHART / "dashboards").glob("*.json"))

#: Triton's own metrics (its metrics port, 8002): the code does not define them, so only those
#: the dashboards use are listed, as Triton 2.x names them.
TRITON_METRICS = frozenset({"nv_inference_queue_duration_us", "nv_inference_request_success"})

#: The series each metric type exposes beside (or instead of) its family name.
SUFFIXES = {
    "counter": ("_total",),
    "histogram": ("_bucket", "_sum", "_count"),
    "gauge": ("",),
    "summary": ("", "_sum", "_count"),
    "info": ("_info",),
}


def exported_metrics() -> frozenset[str]:
    """Series names of every metric the platform's packages register."""
    names = {
        family.name + suffix
        for family in REGISTRY.collect()
        for suffix in SUFFIXES.get(family.type, ("",))
    }
    return frozenset(names)


KNOWN = exported_metrics() | TRITON_METRICS


def unknown_metrics(expr: str) -> set[str]:
    return metric_names(expr) - KNOWN


def load(path: Path) -> dict[str, Any]:
    board: dict[str, Any] = json.loads(path.read_text())
    return board


def panels(board: dict[str, Any]) -> list[dict[str, Any]]:
    """Every panel, those inside collapsed rows included."""
    out: list[dict[str, Any]] = []
    for panel in board["panels"]:
        out.append(panel)
        out.extend(panels(panel) if panel.get("panels") else [])
    return out


def dashboard_queries(board: dict[str, Any]) -> list[tuple[str, str]]:
    """(where, PromQL) for every panel target."""
    return [
        (f"{board['uid']}/{panel['title']}", target["expr"])
        for panel in panels(board)
        for target in panel.get("targets", [])
    ]


def variable_queries(board: dict[str, Any]) -> list[tuple[str, str]]:
    out = []
    for variable in board.get("templating", {}).get("list", []):
        if variable["type"] == "query":
            query = variable["query"]
            out.append((variable["name"], query["query"] if isinstance(query, dict) else query))
    return out


def rule_expressions() -> list[tuple[str, str]]:
    rule = one(scenario("monitoring"), "PrometheusRule")
    return [(r["alert"], r["expr"]) for group in rule["spec"]["groups"] for r in group["rules"]]


# -- the tokenizer --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("expr", "expected"),
    [
        (
            'histogram_quantile(0.99, sum by (le, stage) (rate(a_seconds_bucket{ns="$ns", '
            'stage!~"by|sum"}[5m])))',
            {"a_seconds_bucket"},
        ),
        (
            "sum(rate(a_total[5m])) / ignoring(code) group_left sum(rate(b_total[$__rate_interval]"
            " offset 1h)) > bool 0.5",
            {"a_total", "b_total"},
        ),
        ("up == 0 and on(job) vector(1)", {"up"}),
        ("count by (model, version) (info{x='1'} == 1)", {"info"}),
        ("sum without (pod) (rate(y[1h30m:1m])) * 1e3", {"y"}),
        ("sum(rate(x[5m])) by (le) unless nan > Inf", {"x"}),
        ("job:requests:rate5m > 0.5", {"job:requests:rate5m"}),
        ("max_over_time(${metric_var}[5m])", set()),
    ],
)
def test_tokenizer_finds_metric_names(expr: str, expected: set[str]) -> None:
    assert metric_names(expr) == expected


def test_tokenizer_rejects_what_it_cannot_read() -> None:
    with pytest.raises(ValueError, match="cannot read"):
        tokens("rate(x[5m]) # comment")
    with pytest.raises(ValueError, match="unbalanced"):
        metric_names("rate(x{a='b'[5m])")


def test_grafana_variable_queries() -> None:
    assert grafana_query_metrics("label_values(cascade_requests_total, namespace)") == {
        "cascade_requests_total"
    }
    assert grafana_query_metrics("label_values(namespace)") == set()


def test_a_renamed_metric_is_caught() -> None:
    """The check has teeth: a name the code does not export is reported."""
    good = (
        "histogram_quantile(0.99, sum by (le) (rate(cascade_request_duration_seconds_bucket[5m])))"
    )
    assert unknown_metrics(good) == set()
    renamed = good.replace("cascade_request_duration_seconds", "cascade_request_latency_seconds")
    assert unknown_metrics(renamed) == {"cascade_request_latency_seconds_bucket"}
    assert unknown_metrics("rate(cascade_requests[5m])") == {"cascade_requests"}  # no _total


def test_the_registry_holds_both_packages_metrics() -> None:
    for name in (
        "cascade_requests_total",
        "cascade_stage_duration_seconds_bucket",
        "cascade_operator_canary_weight_percent",
        "cascade_operator_reconcile_duration_seconds_count",
    ):
        assert name in KNOWN


# -- dashboards -----------------------------------------------------------------------------


@pytest.mark.parametrize("path", DASHBOARDS, ids=[p.name for p in DASHBOARDS])
def test_dashboard_is_well_formed(path: Path) -> None:
    board = load(path)
    assert board["uid"] == path.stem
    assert board["title"].startswith("Cascade / ")
    assert "cascade" in board["tags"]
    all_panels = panels(board)
    ids = [p["id"] for p in all_panels]
    assert len(ids) == len(set(ids)), "panel ids must be unique"
    charts = [p for p in all_panels if p["type"] != "row"]
    assert charts
    for panel in charts:
        assert panel["targets"], panel["title"]
        assert panel["datasource"] == {"type": "prometheus", "uid": "${datasource}"}
        assert panel.get("description"), panel["title"]
        grid = panel["gridPos"]
        assert grid["x"] + grid["w"] <= 24
    refs = [[t["refId"] for t in p["targets"]] for p in charts]
    assert all(len(r) == len(set(r)) for r in refs)


def test_dashboard_uids_and_titles_are_unique() -> None:
    boards = [load(p) for p in DASHBOARDS]
    assert len({b["uid"] for b in boards}) == len(boards)
    assert len({b["title"] for b in boards}) == len(boards)


@pytest.mark.parametrize("path", DASHBOARDS, ids=[p.name for p in DASHBOARDS])
def test_dashboard_queries_name_exported_metrics(path: Path) -> None:
    board = load(path)
    for where, expr in dashboard_queries(board):
        assert metric_names(expr), f"{where}: reads no metric"
        assert not unknown_metrics(expr), f"{where}: {unknown_metrics(expr)} in {expr}"
    for where, query in variable_queries(board):
        assert not grafana_query_metrics(query) - KNOWN, f"variable {where}: {query}"


def test_dashboards_cover_the_platforms_signals() -> None:
    used: set[str] = set()
    for path in DASHBOARDS:
        for _, expr in dashboard_queries(load(path)):
            used |= metric_names(expr)
    wanted = {
        "cascade_stage_duration_seconds_bucket",  # per-stage latency
        "cascade_request_duration_seconds_bucket",
        "cascade_requests_total",  # throughput and errors by code and variant
        "cascade_fallbacks_total",
        "cascade_degraded_requests_total",
        "cascade_operator_canary_weight_percent",  # canary progress
        "cascade_operator_canary_decisions_total",
        "cascade_exposures_total",  # experiments
        "cascade_exposures_dropped_total",
        "cascade_operator_reconcile_duration_seconds_bucket",  # operator health
        "cascade_operator_reconcile_errors_total",
        "cascade_operator_replicas",
    }
    assert wanted <= used, wanted - used


def test_dashboards_ship_as_sidecar_configmaps() -> None:
    maps = [c for c in of_kind(scenario("monitoring"), "ConfigMap") if "dashboard" in str(c)]
    assert len(maps) == len(DASHBOARDS)
    for config_map in maps:
        assert config_map["metadata"]["labels"]["grafana_dashboard"] == "1"
        assert config_map["metadata"]["namespace"] == "monitoring"
        assert config_map["metadata"]["annotations"] == {"grafana_folder": "Cascade"}
        ((name, data),) = config_map["data"].items()
        assert json.loads(data) == load(CHART / "dashboards" / name)
    assert not of_kind(scenario("default"), "ConfigMap")


# -- alerts and monitors ---------------------------------------------------------------------


def test_alert_rules_name_exported_metrics() -> None:
    rules = rule_expressions()
    assert {alert for alert, _ in rules} == {
        "CascadeGraphLatencyP99High",
        "CascadeGraphErrorRateHigh",
        "CascadeGraphFallbackRateHigh",
        "CascadeCanaryRolledBack",
        "CascadeOperatorReconcileErrors",
    }
    for alert, expr in rules:
        assert metric_names(expr), alert
        assert not unknown_metrics(expr), f"{alert}: {unknown_metrics(expr)}"


def test_alert_thresholds_come_from_values() -> None:
    exprs = dict(rule_expressions())
    assert exprs["CascadeGraphLatencyP99High"].endswith("> 0.04")  # monitoring-values.yaml
    assert exprs["CascadeGraphErrorRateHigh"].endswith("> 0.01")
    assert 'code=~"5.."' in exprs["CascadeGraphErrorRateHigh"]
    assert 'decision="rollback"' in exprs["CascadeCanaryRolledBack"]
    rule = one(scenario("monitoring"), "PrometheusRule")
    for group in rule["spec"]["groups"]:
        for r in group["rules"]:
            assert r["labels"]["severity"] in ("warning", "critical")
            assert r["labels"]["team"] == "recsys"
            assert r["annotations"]["summary"]


def test_monitors_select_the_right_pods_and_ports() -> None:
    docs = scenario("monitoring")
    for monitor in of_kind(docs, "PodMonitor") + of_kind(docs, "ServiceMonitor"):
        assert monitor["apiVersion"] == "monitoring.coreos.com/v1"
        assert monitor["metadata"]["labels"]["release"] == "kube-prometheus-stack"
        assert monitor["spec"]["namespaceSelector"] == {"matchNames": ["cascade"]}
    graph = one(docs, "PodMonitor", "recommender-graph")["spec"]
    assert graph["selector"]["matchLabels"]["app.kubernetes.io/component"] == "graph"
    assert graph["podMetricsEndpoints"] == [{"port": "http", "path": "/metrics", "interval": "15s"}]
    triton = one(docs, "PodMonitor", "recommender-triton")["spec"]
    assert triton["selector"]["matchLabels"]["app.kubernetes.io/component"] == "triton"
    assert triton["podMetricsEndpoints"][0]["port"] == "metrics"
    operator = one(docs, "ServiceMonitor")["spec"]
    service = one(docs, "Service", "cascade-operator-metrics")
    assert operator["selector"]["matchLabels"].items() <= service["metadata"]["labels"].items()
    assert operator["endpoints"][0]["port"] == "metrics"
    for kind in ("PodMonitor", "ServiceMonitor", "PrometheusRule"):
        assert not of_kind(scenario("default"), kind)
