"""Prometheus metrics of the data plane, defined once (``_total`` counters, bounded labels)."""

from __future__ import annotations

from prometheus_client import Counter, Gauge

#: 1 for the runtime kind that serves the models ("triton-grpc", "triton-http",
#: "onnxruntime"), 0 for the others: an in-process fallback is visible on every dashboard.
MODEL_RUNTIME = Gauge(
    "cascade_model_runtime_info",
    "Which runtime serves the models (1 = active).",
    ["kind"],
)

#: Times "auto" runtime selection fell back from Triton to in-process onnxruntime.
RUNTIME_FALLBACKS = Counter(
    "cascade_runtime_fallbacks_total",
    "Times the runtime choice fell back from Triton to in-process onnxruntime.",
)

RUNTIME_KINDS = ("triton-grpc", "triton-http", "onnxruntime")


def record_runtime(kind: str) -> None:
    for known in RUNTIME_KINDS:
        MODEL_RUNTIME.labels(kind=known).set(1.0 if known == kind else 0.0)
