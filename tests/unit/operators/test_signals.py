"""What the operator asks Prometheus and the reports, and how it reads the answers."""

from __future__ import annotations

import asyncio
import math
from typing import Any

from operators.signals import Observer, Reports, canary_queries, scaling_queries, summarize


class FakePrometheus:
    """Answers by the metric a query names, like the real API's vectors."""

    def __init__(self, answers: dict[str, list[tuple[dict[str, str], float]]]) -> None:
        self.answers, self.asked = answers, []  # type: list[str]

    async def vector(self, query: str) -> list[tuple[dict[str, str], float]]:
        self.asked.append(query)
        for needle, answer in self.answers.items():
            if needle in query:
                return answer
        return []

    async def scalar(self, query: str) -> float | None:
        values = await self.vector(query)
        return None if not values or math.isnan(values[0][1]) else values[0][1]


class NoReports(Reports):
    def __init__(self) -> None:
        pass

    async def decision(self, *args: Any) -> tuple[str, str] | None:
        return None


def observer(answers: dict[str, list[tuple[dict[str, str], float]]]) -> Observer:
    return Observer(FakePrometheus(answers), NoReports())  # type: ignore[arg-type]


def test_canary_queries_select_the_canary_variant_of_the_graph_service() -> None:
    q = canary_queries("ml", "recs", window_s=10)
    for text in q.values():
        assert 'namespace="ml"' in text
        assert 'service="recs-graph"' in text
        assert 'variant="canary"' in text
        assert "[30s]" in text  # never a window shorter than two scrapes
    assert 'code=~"5.."' in q["error_rate"]
    assert q["p99_ms"].startswith("1000 * histogram_quantile(0.99")


def test_scaling_queries_read_each_deployment_service() -> None:
    q = scaling_queries("ml", "recs")
    assert 'service="recs-triton"' in q["queue"]
    assert all(
        'service="recs-graph"' in q[k] for k in ("stage_p99_ms", "in_flight", "fallback_rate")
    )


def test_no_5xx_series_reads_as_no_errors_when_there_was_traffic() -> None:
    obs = observer({"increase(cascade_requests_total": [({}, 120.0)], "duration": [({}, 21.0)]})
    m = asyncio.run(obs.canary("ml", "recs", "canary-x", 60, business=True))
    assert (m.requests, m.error_rate, m.p99_ms, m.business) == (120.0, 0.0, 21.0, None)
    empty = asyncio.run(observer({}).canary("ml", "recs", "canary-x", 60, business=True))
    assert (empty.requests, empty.error_rate, empty.p99_ms) == (None, None, None)


def test_stage_signals_go_to_the_deployment_that_runs_the_stage() -> None:
    obs = observer(
        {
            "cascade_stage_duration_seconds": [
                ({"stage": "retrieval"}, 12.0),
                ({"stage": "ranking"}, 30.0),
            ],
            "cascade_fallbacks_total": [({"stage": "ranking"}, 0.2), ({"stage": "retrieval"}, 0.0)],
            "nv_inference_pending_request_count": [({}, 6.0)],
        }
    )
    signals = asyncio.run(
        obs.scaling(
            "ml", "recs", {"graph": 2, "triton": 1},
            budgets={"retrieval": 15.0, "ranking": 25.0, "rerank": 10.0},
            target_p99_ms=50.0, fallback_target=0.01, in_flight_target=8.0, queue_target=4.0,
        )
    )  # fmt: skip
    assert signals is not None
    graph, triton = signals["graph"], signals["triton"]
    assert (graph.replicas, triton.replicas) == (2, 1)
    assert (12.0, 15.0) in graph.latency
    assert (None, 50.0) in graph.latency
    assert triton.latency == [(30.0, 25.0)]
    assert triton.fallbacks == [(0.2, 0.01)]
    assert graph.fallbacks == [(0.0, 0.01)]
    assert triton.queue == 6.0
    assert triton.pressure() == 20.0  # the fallback rate, 20x its target


def test_without_prometheus_there_is_nothing_to_scale_on() -> None:
    obs = Observer(None, NoReports())
    assert asyncio.run(obs.scaling("ml", "g", {}, {}, 50.0, 0.01, 8.0, 4.0)) is None


def test_report_summary_for_a_variant() -> None:
    report = {"decisions": {"canary": "harmful"}, "reasons": {"canary": "ctr is worse"}}
    assert summarize(report, "canary") == ("harmful", "ctr is worse")
    assert summarize(report, "other") is None
