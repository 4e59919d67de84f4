"""A scripted stand-in for Prometheus and the graph's experiment-report API.

No Prometheus scrapes a graph in the operator tests (there are no pods), so the tests feed the
canary analysis and the autoscaler through this server: it answers ``/api/v1/query`` in
Prometheus' JSON shape, choosing the value by which metric the PromQL names, and
``/v1/experiments/{name}`` with whatever report the test set (a real ``ab_router`` analysis).
Every query is recorded, so a test can check what the operator asked.
"""

from __future__ import annotations

import json
import random
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlparse

from ab_router.analysis import analyze_events
from ab_router.design import Experiment
from ab_router.events import Exposure, Outcome


class MetricsFeed:
    def __init__(self) -> None:
        self.values: dict[str, float | None] = {}
        self.stage_p99_ms: dict[str, float] = {}
        self.fallback_rates: dict[str, float] = {}
        self.reports: dict[str, dict[str, Any]] = {}
        self.queries: list[str] = []
        self._lock = threading.Lock()
        feed = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                url = urlparse(self.path)
                if url.path == "/api/v1/query":
                    query = parse_qs(url.query)["query"][0]
                    self._send(200, feed.answer(query))
                elif url.path.startswith("/v1/experiments/"):
                    name = url.path.rsplit("/", 1)[-1]
                    with feed._lock:
                        report = feed.reports.get(name)
                    if report is None:
                        self._send(404, {"error": f"no experiment named {name!r}"})
                    else:
                        self._send(200, report)
                else:
                    self._send(404, {"error": "not found"})

            def _send(self, status: int, payload: dict[str, Any]) -> None:
                data = json.dumps(payload).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def __enter__(self) -> MetricsFeed:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()

    def set(self, **values: float | None) -> None:
        """Canary series (requests, error_rate, p99_ms) and scaling ones (in_flight, queue)."""
        with self._lock:
            self.values.update(values)

    def set_stages(self, **p99_ms: float) -> None:
        with self._lock:
            self.stage_p99_ms = dict(p99_ms)

    def set_fallbacks(self, **rates: float) -> None:
        with self._lock:
            self.fallback_rates = dict(rates)

    def set_report(self, experiment: str, report: dict[str, Any] | None) -> None:
        with self._lock:
            if report is None:
                self.reports.pop(experiment, None)
            else:
                self.reports[experiment] = report

    def answer(self, query: str) -> dict[str, Any]:
        with self._lock:
            self.queries.append(query)
            by_stage = {
                "cascade_stage_duration_seconds_bucket": self.stage_p99_ms,
                "cascade_fallbacks_total": self.fallback_rates,
            }
            for metric, values in by_stage.items():
                if metric in query:
                    return _vector(
                        [{"metric": {"stage": k}, "value": [0, str(v)]} for k, v in values.items()]
                    )
            key = _series(query)
            value = self.values.get(key) if key else None
        if value is None:
            return _vector([])
        return _vector([{"metric": {}, "value": [0, str(value)]}])


def _series(query: str) -> str | None:
    if "increase(cascade_requests_total" in query:
        return "requests"
    if 'code=~"5.."' in query:
        return "error_rate"
    if "cascade_request_duration_seconds_bucket" in query:
        return "p99_ms" if 'variant="canary"' in query else "graph_p99_ms"
    if "cascade_in_flight_requests" in query:
        return "in_flight"
    if "nv_inference_pending_request_count" in query:
        return "queue"
    return None


def _vector(result: list[dict[str, Any]]) -> dict[str, Any]:
    return {"status": "success", "data": {"resultType": "vector", "result": result}}


def business_report(stable_ctr: float, canary_ctr: float, users: int = 3000) -> dict[str, Any]:
    """A real analysis of a simulated canary split (90/10) with the given click rates."""
    design = Experiment.model_validate(
        {
            "name": "canary-ranker-dcn",
            "variants": [{"name": "stable", "weight": 90}, {"name": "canary", "weight": 10}],
            "metrics": [{"name": "click", "role": "primary"}],
        }
    )
    rng = random.Random(7)
    exposures, outcomes = [], []
    for i in range(users):
        variant = "canary" if rng.random() < 0.1 else "stable"
        unit = f"u{i}"
        exposures.append(
            Exposure(
                event_id=f"e{i}", experiment=design.name, unit_id=unit, timestamp=i, variant=variant
            )
        )
        if rng.random() < (canary_ctr if variant == "canary" else stable_ctr):
            outcomes.append(
                Outcome(
                    event_id=f"o{i}",
                    experiment=design.name,
                    unit_id=unit,
                    timestamp=i + 0.5,
                    metric="click",
                    value=1.0,
                )
            )
    return analyze_events(design, exposures, outcomes).to_dict()
