"""Tracing for the graph: one OpenTelemetry trace per request, a span per stage.

A client's W3C ``traceparent`` is continued, so the graph's spans join the caller's trace;
the ranking replica continues the ingress's context from a carrier sent with the job.
Spans go to an OTLP collector when ``CASCADE_OTLP_ENDPOINT`` is set (and the exporter is
installed), to a JSON-lines file when ``CASCADE_TRACE_FILE`` is set, and nowhere otherwise
(the tracer still propagates context, so trace ids are returned to the client).
"""

from __future__ import annotations

import json
import os
import threading
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any

from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import (
    BatchSpanProcessor,
    SimpleSpanProcessor,
    SpanExporter,
    SpanExportResult,
)
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

_PROPAGATOR = TraceContextTextMapPropagator()
_lock = threading.Lock()
_provider: TracerProvider | None = None


class JsonLinesExporter(SpanExporter):
    """Appends finished spans as JSON lines; readable by tests and by ``jq``."""

    def __init__(self, path: str) -> None:
        self.path = path
        self._lock = threading.Lock()

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        lines = []
        for span in spans:
            ctx = span.get_span_context()
            parent = span.parent
            lines.append(
                json.dumps(
                    {
                        "name": span.name,
                        "trace_id": f"{ctx.trace_id:032x}" if ctx else None,
                        "span_id": f"{ctx.span_id:016x}" if ctx else None,
                        "parent_id": f"{parent.span_id:016x}" if parent else None,
                        "start_ns": span.start_time,
                        "end_ns": span.end_time,
                        "attributes": dict(span.attributes or {}),
                    }
                )
            )
        with self._lock, open(self.path, "a") as out:
            out.write("".join(line + "\n" for line in lines))
        return SpanExportResult.SUCCESS


def tracer(service: str = "cascade-graph") -> trace.Tracer:
    """This process's tracer, set up once from the environment."""
    global _provider
    with _lock:
        if _provider is None:
            _provider = TracerProvider(resource=Resource.create({"service.name": service}))
            path = os.environ.get("CASCADE_TRACE_FILE")
            if path:
                _provider.add_span_processor(SimpleSpanProcessor(JsonLinesExporter(path)))
            endpoint = os.environ.get("CASCADE_OTLP_ENDPOINT")
            if endpoint:
                _provider.add_span_processor(BatchSpanProcessor(_otlp_exporter(endpoint)))
    return _provider.get_tracer("cascade.inference")


def _otlp_exporter(endpoint: str) -> SpanExporter:
    try:
        from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter
    except ImportError as exc:
        raise RuntimeError(
            "CASCADE_OTLP_ENDPOINT is set but opentelemetry-exporter-otlp is not installed"
        ) from exc
    exporter: SpanExporter = OTLPSpanExporter(endpoint=endpoint, insecure=True)
    return exporter


def extract(headers: Mapping[str, str]) -> otel_context.Context:
    """The caller's context from a ``traceparent`` header (a fresh root when absent/bad)."""
    return _PROPAGATOR.extract(carrier={k.lower(): v for k, v in headers.items()})


def inject() -> dict[str, str]:
    """The current context as a carrier, to continue the trace in another process."""
    carrier: dict[str, str] = {}
    _PROPAGATOR.inject(carrier)
    return carrier


@contextmanager
def attached(ctx: otel_context.Context) -> Iterator[None]:
    token = otel_context.attach(ctx)
    try:
        yield
    finally:
        otel_context.detach(token)


def traceparent(span: trace.Span) -> str:
    ctx = span.get_span_context()
    return f"00-{ctx.trace_id:032x}-{ctx.span_id:016x}-{int(ctx.trace_flags):02x}"


def set_attributes(span: trace.Span, attributes: Mapping[str, Any]) -> None:
    for key, value in attributes.items():
        if isinstance(value, list | tuple):
            span.set_attribute(key, [str(v) for v in value])
        elif value is not None:
            span.set_attribute(key, value)
