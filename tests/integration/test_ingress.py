"""An ingress replica gives back what it holds when Serve stops it: threads, connections,
the experiments watcher and the event store (its queued exposures written first).

Built outside Serve, so nothing is ranked here (``serve.batch`` needs a replica); serving
through Serve is the graph tests' part."""

from __future__ import annotations

import asyncio
import json
import threading
from pathlib import Path

import pytest

from ab_router.stores.sqlite import SqliteEventStore
from contract.graph_config import GraphConfig
from inference.errors import Unavailable
from inference.graph.ingress import GraphIngress
from inference.graph.rest_routes import build_api
from inference.graph.settings import GraphSettings

_THREADS = ("graph", "ranking", "catalog-watcher", "exposures")


def _ours() -> set[str]:
    return {t.name for t in threading.enumerate() if t.name.startswith(_THREADS)}


def test_closing_an_ingress_stops_its_threads_and_closes_its_connections(
    movielens_repo: Path, tmp_path: Path
) -> None:
    experiments = tmp_path / "experiments.json"
    experiments.write_text(
        json.dumps(
            {
                "layers": [
                    {
                        "name": "ranking",
                        "experiments": [
                            {
                                "name": "ab",
                                "layer": "ranking",
                                "status": "running",
                                "variants": [
                                    {"name": "a", "weight": 50},
                                    {"name": "b", "weight": 50},
                                ],
                            }
                        ],
                    }
                ]
            }
        )
    )
    before = _ours()
    settings = GraphSettings(
        repository=movielens_repo,
        runtime="onnxruntime",
        graph=GraphConfig(),
        triton_http="127.0.0.1:9",  # nothing listens: the pass-through still opens a session
        experiments=experiments,
        experiment="ab",
        event_store=str(tmp_path / "events.db"),
    )
    ingress = GraphIngress(None, settings)

    async def serve_then_stop() -> None:
        assert ingress.router is not None
        ingress.router.served("1", ingress.router.route("1").variant or "a")  # an exposure
        with pytest.raises(Unavailable):
            await ingress.passthrough.http("GET", "/v2/health/live", b"", {})
        assert _ours() - before >= {"catalog-watcher", "exposures"}
        app = build_api(ingress)
        async with app.router.lifespan_context(app):  # as Serve runs it for the replica
            pass

    asyncio.run(serve_then_stop())
    for thread in threading.enumerate():
        if thread.name.startswith(_THREADS) and thread.name not in before:
            thread.join(timeout=5)
    assert _ours() - before == set()
    assert ingress.passthrough._http is None  # the aiohttp session was closed
    reader = SqliteEventStore(tmp_path / "events.db")
    assert [e.unit_id for e in reader.exposures("ab")] == ["1"]  # flushed before the close
    reader.close()
