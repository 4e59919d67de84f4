"""What the operator observes: Prometheus queries and the graph's experiment reports.

The PromQL lives here, built by pure functions (:func:`canary_queries`, :func:`scaling_queries`)
so the chart's checks can see which metrics the operator depends on. :class:`Prometheus` and
:class:`Reports` are the adapters; an unreachable or empty source reads as *not observed*
(``None``), which the decisions treat as "no evidence", never as "healthy".
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from typing import Any

import aiohttp

from operators.reconcile.autoscale import Signals
from operators.reconcile.canary import CanaryMetrics
from operators.reconcile.children import GRAPH_HTTP, child_name

log = logging.getLogger("cascade.operator")


def _selector(namespace: str, service: str, *matchers: str) -> str:
    """A PromQL label selector for one Service's series (labels the ServiceMonitor adds)."""
    return "{" + ",".join([f'namespace="{namespace}"', f'service="{service}"', *matchers]) + "}"


def canary_queries(namespace: str, graph: str, window_s: int) -> dict[str, str]:
    """PromQL for the canary variant of ``graph`` over the last ``window_s`` seconds."""
    sel = _selector(namespace, child_name(graph, "graph"), 'variant="canary"')
    errors = _selector(namespace, child_name(graph, "graph"), 'variant="canary"', 'code=~"5.."')
    w = f"[{max(window_s, 30)}s]"
    return {
        "requests": f"sum(increase(cascade_requests_total{sel}{w}))",
        "error_rate": (
            f"sum(rate(cascade_requests_total{errors}{w}))"
            f" / sum(rate(cascade_requests_total{sel}{w}))"
        ),
        "p99_ms": (
            "1000 * histogram_quantile(0.99, sum by (le) "
            f"(rate(cascade_request_duration_seconds_bucket{sel}{w})))"
        ),
    }


#: Which deployment runs each stage: Triton does the ranking compute (rankers and combiner),
#: the graph the rest (retrieval's item search is most of its time).
STAGE_DEPLOYMENT = {
    "features": "graph",
    "retrieval": "graph",
    "rerank": "graph",
    "ranking": "triton",
    "combiner": "triton",
}


def scaling_queries(namespace: str, graph: str, window_s: int = 60) -> dict[str, str]:
    g = _selector(namespace, child_name(graph, "graph"))
    t = _selector(namespace, child_name(graph, "triton"))
    w = f"[{window_s}s]"
    return {
        "stage_p99_ms": (
            "1000 * histogram_quantile(0.99, sum by (le, stage) "
            f"(rate(cascade_stage_duration_seconds_bucket{g}{w})))"
        ),
        "p99_ms": (
            "1000 * histogram_quantile(0.99, sum by (le) "
            f"(rate(cascade_request_duration_seconds_bucket{g}{w})))"
        ),
        "fallback_rate": (
            f"sum by (stage) (rate(cascade_fallbacks_total{g}{w}))"
            f" / scalar(sum(rate(cascade_requests_total{g}{w})))"
        ),
        "in_flight": f"sum(cascade_in_flight_requests{g})",
        # Triton's own gauge of requests waiting in its scheduler queues.
        "queue": f"sum(nv_inference_pending_request_count{t})",
    }


class Prometheus:
    """The instant-query API (``/api/v1/query``)."""

    def __init__(self, url: str, session: aiohttp.ClientSession) -> None:
        self._url = url.rstrip("/") + "/api/v1/query"
        self._session = session

    async def vector(self, query: str) -> list[tuple[dict[str, str], float]]:
        try:
            async with self._session.get(self._url, params={"query": query}) as response:
                payload: dict[str, Any] = await response.json(content_type=None)
        except (aiohttp.ClientError, TimeoutError, ValueError) as exc:
            log.warning("prometheus query failed (%r): %s", exc, query)
            return []
        if payload.get("status") != "success":
            log.warning("prometheus refused %s: %s", query, payload.get("error"))
            return []
        data = payload.get("data", {})
        if data.get("resultType") == "scalar":
            return [({}, float(data["result"][1]))]
        return [(r.get("metric", {}), float(r["value"][1])) for r in data.get("result", [])]

    async def scalar(self, query: str) -> float | None:
        """The first sample's value; ``None`` when there is none or it is NaN (0/0)."""
        values = await self.vector(query)
        if not values or math.isnan(values[0][1]):
            return None
        return values[0][1]


class Reports:
    """``GET /v1/experiments/{name}`` on a graph: the ab_router analysis as JSON."""

    def __init__(self, session: aiohttp.ClientSession, base: str | None = None) -> None:
        self._session = session
        self._base = base  # overrides the in-cluster service address (tests, port-forwards)

    def url(self, namespace: str, graph: str) -> str:
        if self._base is not None:
            return self._base.rstrip("/")
        return f"http://{child_name(graph, 'graph')}.{namespace}.svc:{GRAPH_HTTP}"

    async def decision(
        self, namespace: str, graph: str, experiment: str, variant: str
    ) -> tuple[str, str] | None:
        report = await self.report(namespace, graph, experiment)
        return None if report is None else summarize(report, variant)

    async def report(self, namespace: str, graph: str, experiment: str) -> dict[str, Any] | None:
        """The analysis as JSON; ``None`` when the graph cannot answer (not observed)."""
        url = f"{self.url(namespace, graph)}/v1/experiments/{experiment}"
        try:
            async with self._session.get(url) as response:
                if response.status != 200:
                    return None
                data: dict[str, Any] = await response.json(content_type=None)
                return data
        except (aiohttp.ClientError, TimeoutError, ValueError) as exc:
            log.warning("experiment report unavailable (%r): %s", exc, url)
            return None


def summarize(report: dict[str, Any], variant: str) -> tuple[str, str] | None:
    """(decision, reason) for ``variant`` from an ``ExperimentReport.to_dict()``."""
    decisions = report.get("decisions", {})
    if variant not in decisions:
        return None
    return str(decisions[variant]), str(report.get("reasons", {}).get(variant, ""))


@dataclass(frozen=True)
class Observer:
    """Both sources together, as the reconcilers need them."""

    prometheus: Prometheus | None
    reports: Reports

    async def canary(
        self, namespace: str, graph: str, experiment: str, window_s: int, business: bool
    ) -> CanaryMetrics:
        if self.prometheus is None:
            values: dict[str, float | None] = {}
        else:
            q = canary_queries(namespace, graph, window_s)
            values = {k: await self.prometheus.scalar(v) for k, v in q.items()}
        verdict = (
            await self.reports.decision(namespace, graph, experiment, "canary")
            if business
            else None
        )
        requests = values.get("requests")
        error_rate = values.get("error_rate")
        if error_rate is None and requests is not None and requests > 0:
            error_rate = 0.0  # no 5xx series at all: nothing failed
        return CanaryMetrics(
            requests=requests,
            error_rate=error_rate,
            p99_ms=values.get("p99_ms"),
            business=verdict[0] if verdict else None,
            business_reason=verdict[1] if verdict else "",
        )

    async def scaling(
        self,
        namespace: str,
        graph: str,
        replicas: dict[str, int],
        budgets: dict[str, float],
        target_p99_ms: float,
        fallback_target: float,
        in_flight_target: float,
        queue_target: float,
    ) -> dict[str, Signals] | None:
        """Signals per deployment, or ``None`` when there is nothing to observe them with."""
        if self.prometheus is None:
            return None
        q = scaling_queries(namespace, graph)
        stage = {m.get("stage", ""): v for m, v in await self.prometheus.vector(q["stage_p99_ms"])}
        fallbacks = {
            m.get("stage", ""): v for m, v in await self.prometheus.vector(q["fallback_rate"])
        }
        p99 = await self.prometheus.scalar(q["p99_ms"])
        in_flight = await self.prometheus.scalar(q["in_flight"])
        queue = await self.prometheus.scalar(q["queue"])

        def latency(deployment: str) -> list[tuple[float | None, float]]:
            return [
                (stage.get(name), budgets[name])
                for name, where in STAGE_DEPLOYMENT.items()
                if where == deployment and name in budgets
            ]

        def degraded(deployment: str) -> list[tuple[float | None, float]]:
            return [
                (rate, fallback_target)
                for name, rate in fallbacks.items()
                if STAGE_DEPLOYMENT.get(name) == deployment
            ]

        return {
            "graph": Signals(
                replicas=replicas.get("graph", 1),
                # The end-to-end p99 is the graph's to answer for: it holds the deadline.
                latency=[*latency("graph"), (p99, target_p99_ms)],
                fallbacks=degraded("graph"),
                in_flight=in_flight,
                in_flight_target=in_flight_target,
            ),
            "triton": Signals(
                replicas=replicas.get("triton", 1),
                latency=latency("triton"),
                fallbacks=degraded("triton"),
                queue=queue,
                queue_target=queue_target,
            ),
        }
