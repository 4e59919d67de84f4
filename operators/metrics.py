"""The operator's own Prometheus metrics, defined once.

Labels stay bounded: ``kind`` is one of three resource kinds, ``decision`` one of the canary
state machine's few outcomes; namespace and object names are as many as the cluster's
resources.
"""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

RECONCILE_SECONDS = Histogram(
    "cascade_operator_reconcile_duration_seconds",
    "Time one reconcile of a resource took, by kind.",
    ["kind"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0),
)
RECONCILE_ERRORS = Counter(
    "cascade_operator_reconcile_errors_total",
    "Reconciles that failed (and will be retried), by kind.",
    ["kind"],
)
INVALID_SPECS = Counter(
    "cascade_operator_invalid_specs_total",
    "Specs rejected by validation (a condition names the field), by kind.",
    ["kind"],
)
CANARY_DECISIONS = Counter(
    "cascade_operator_canary_decisions_total",
    "Canary analysis outcomes: hold, advance, promote, rollback, pause.",
    ["decision"],
)
CANARY_WEIGHT = Gauge(
    "cascade_operator_canary_weight_percent",
    "Percent of traffic on a model's new version (0 outside a canary).",
    ["namespace", "model"],
)
REPLICAS = Gauge(
    "cascade_operator_replicas",
    "Replicas the operator set for a graph's deployment.",
    ["namespace", "graph", "deployment"],
)
SCALE_EVENTS = Counter(
    "cascade_operator_scale_events_total",
    "Replica changes made by the SLO autoscaler, by deployment role and direction.",
    ["deployment", "direction"],
)
