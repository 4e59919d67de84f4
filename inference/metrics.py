"""Prometheus metrics of the data plane, defined once (``_total`` counters, bounded labels)."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

#: 1 for the runtime kind that serves the models ("triton-grpc", "triton-http",
#: "onnxruntime"), 0 for the others: models run in-process show on every dashboard.
MODEL_RUNTIME = Gauge(
    "cascade_model_runtime_info",
    "Which runtime serves the models (1 = active).",
    ["kind"],
)

RUNTIME_KINDS = ("triton-grpc", "triton-http", "onnxruntime")


def record_runtime(kind: str) -> None:
    for known in RUNTIME_KINDS:
        MODEL_RUNTIME.labels(kind=known).set(1.0 if known == kind else 0.0)


# ---- the recommendation graph --------------------------------------------------------------

#: Latency buckets sized for a 50 ms end-to-end budget (seconds).
LATENCY_BUCKETS = (0.002, 0.005, 0.01, 0.015, 0.025, 0.035, 0.05, 0.075, 0.1, 0.25, 0.5, 1.0)

REQUESTS = Counter(
    "cascade_requests_total",
    "Requests answered by the graph ingress, by protocol, status code and experiment variant "
    "(``none`` outside an experiment; a canary's variants are ``stable`` and ``canary``).",
    ["protocol", "code", "variant"],
)
REQUEST_SECONDS = Histogram(
    "cascade_request_duration_seconds",
    "End-to-end latency of graph requests inside the ingress, by protocol and variant.",
    ["protocol", "variant"],
    buckets=LATENCY_BUCKETS,
)
STAGE_SECONDS = Histogram(
    "cascade_stage_duration_seconds",
    "Time spent in each stage of the graph.",
    ["stage"],
    buckets=LATENCY_BUCKETS,
)
FALLBACKS = Counter(
    "cascade_fallbacks_total",
    "Stage fallbacks that fired (the request still succeeded).",
    ["stage", "fallback"],
)
DEGRADED = Counter(
    "cascade_degraded_requests_total",
    "Requests answered with at least one fallback.",
)
FEATURE_CACHE = Counter(
    "cascade_feature_cache_lookups_total",
    "Feature-store cache lookups by result (hit or miss).",
    ["result"],
)
ANSWER_CACHE = Counter(
    "cascade_answer_cache_lookups_total",
    "Answer-cache lookups of known users by result (hit: retrieval and ranking skipped).",
    ["result"],
)
IN_FLIGHT = Gauge(
    "cascade_in_flight_requests",
    "Requests being processed by this ingress replica.",
)
REJECTED = Counter(
    "cascade_rejected_requests_total",
    "Requests refused before processing (overload, oversize body).",
    ["reason"],
)
BATCH_SIZE = Histogram(
    "cascade_ranking_batch_size",
    "Requests ranked together in one batch.",
    buckets=(1, 2, 3, 4, 6, 8, 12, 16, 32),
)
MODEL_VERSION = Gauge(
    "cascade_model_version_info",
    "The model version the graph serves (1 = in use).",
    ["model", "version"],
)
MODEL_ERRORS = Counter(
    "cascade_model_errors_total",
    "Failed model calls from the graph, by model and error kind.",
    ["model", "kind"],
)


def record_versions(versions: dict[str, int]) -> None:
    for model, version in versions.items():
        MODEL_VERSION.labels(model=model, version=str(version)).set(1.0)


EXPOSURES = Counter(
    "cascade_exposures_total",
    "Experiment exposures: requests served by a variant.",
    ["variant"],
)
EXPOSURES_DROPPED = Counter(
    "cascade_exposures_dropped_total",
    "Exposures not logged because the event store fell behind or failed.",
)
