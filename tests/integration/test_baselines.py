"""The in-process ceiling of the graph benchmark on a real (small) build; no Ray is started."""

from __future__ import annotations

from pathlib import Path

import pytest

from benchmarks.baselines import InProcessGraph, limit_rps
from contract.graph_config import GraphConfig

pytestmark = pytest.mark.integration


def test_in_process_graph_recommends_unseen_items_and_measures(built_repo: Path) -> None:
    graph = InProcessGraph(built_repo, GraphConfig(candidates=200))
    try:
        catalog = graph.catalog
        user = catalog.user_ids[3]
        items = graph.recommend(user, k=10)
        assert len(items) == 10
        assert len(set(items)) == 10
        assert all(item in catalog.item_index for item in items)
        seen = set(catalog.seen(catalog.user_index[user]).tolist())
        assert seen  # the check below means something
        assert not {catalog.item_index[item] for item in items} & seen
        assert graph.recommend(user, k=10) == items
        assert graph.recommend("no-such-user", k=5) == [
            catalog.item_ids[int(i)] for i in catalog.popular_for({}, 5)
        ]

        result = limit_rps(
            built_repo, catalog.user_ids[:20], seconds=0.3, workers=2, warmup_s=0.1, graph=graph
        )
        assert result["rps"] > 0
        assert result["requests"] > 0
        assert 0 < result["p50_ms"] <= result["p99_ms"]
    finally:
        graph.close()
