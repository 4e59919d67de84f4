"""The orchestrator end to end on a small catalog: stages, cold start, each fallback (errors
and timeouts), request validation and what the response reports. The user tower runs on a fake
runtime; ranking is a fake async callable."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest

from contract.arrays import FloatArray
from contract.graph_config import (
    CacheConfig,
    FaultConfig,
    GraphConfig,
    RerankConfig,
    StageBudgets,
)
from contract.names import USER_TOWER
from inference.errors import BadRequest, InferenceError, ModelNotFound, Unavailable
from inference.graph.catalog import Catalog
from inference.graph.features import CachedFeatureStore, EmbeddedFeatureStore
from inference.graph.recommender import Recommender
from inference.graph.stages import ItemSearch, RankJob, RankResult, Retriever
from inference.graph.types import RecommendRequest, RecommendResponse
from tests.unit.inference.graph.test_stages import FakeRuntime, build_dir

VERSIONS = {USER_TOWER: 3, "ranker_dcn": 2, "ranker_mlp": 5, "combiner": 1}
ROOMY = StageBudgets(retrieval_ms=2000, ranking_ms=2000, rerank_ms=500, total_ms=5000)
# mmr_lambda 1: the final order is the score order, so each fallback's order is visible.
BASE = GraphConfig(
    candidates=6, max_k=5, default_k=3, budgets=ROOMY, rerank=RerankConfig(mmr_lambda=1.0)
)

# With the fake user tower and the build's embeddings, u0 (who has seen item 1) retrieves
# items 4, 2, 3, 5, 0 in that order. The fake ranker scores items by index, so ranking gives
# 5, 4, 3, 2, 0. u0 is F aged 22: that group's popular list, without item 1, starts 0, 2, 3.
RETRIEVAL_ORDER = ["i4", "i2", "i3"]
RANKED_ORDER = ["i5", "i4", "i3"]
POPULAR_FOR_U0 = ["i0", "i2", "i3"]


class FakeRank:
    """The ranking stage as the orchestrator calls it: ``await rank(job, timeout, carrier)``."""

    def __init__(
        self,
        *,
        error: InferenceError | None = None,
        sleep_s: float = 0.0,
        fallbacks: list[str] | None = None,
    ) -> None:
        self.error = error
        self.sleep_s = sleep_s
        self.fallbacks = fallbacks or []
        self.jobs: list[RankJob] = []
        self.timeouts: list[float] = []
        self.finished = 0

    async def __call__(self, job: RankJob, timeout_s: float, carrier: dict[str, str]) -> RankResult:
        assert isinstance(carrier, dict)
        self.jobs.append(job)
        self.timeouts.append(timeout_s)
        if self.sleep_s:
            await asyncio.sleep(self.sleep_s)
        if self.error is not None:
            raise self.error
        self.finished += 1
        scores: FloatArray = job.candidates.items.astype(np.float32)
        return RankResult(scores, list(self.fallbacks), batch_size=1)


@pytest.fixture(scope="module")
def build(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_dir(tmp_path_factory.mktemp("build"))


@pytest.fixture(scope="module")
def catalog(build: Path) -> Catalog:
    return Catalog.load(build)


@pytest.fixture
def executor() -> Iterator[ThreadPoolExecutor]:
    pool = ThreadPoolExecutor(4, thread_name_prefix="test-graph")
    yield pool
    pool.shutdown(wait=True)


class Graph:
    """A recommender and its fakes, built per test."""

    def __init__(
        self,
        catalog: Catalog,
        build: Path,
        executor: ThreadPoolExecutor,
        *,
        config: GraphConfig = BASE,
        runtime: FakeRuntime | None = None,
        rank: FakeRank | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.runtime = runtime or FakeRuntime()
        self.rank = rank or FakeRank()
        self.features = CachedFeatureStore(EmbeddedFeatureStore(catalog), CacheConfig())
        self.recommender = Recommender(
            config=config,
            catalog=catalog,
            features=self.features,
            retriever=Retriever(self.runtime, ItemSearch(build), VERSIONS),
            rank=self.rank,
            versions=VERSIONS,
            executor=executor,
            clock=clock,
        )

    def ask(self, user_id: str = "u0", k: int = 3, **context: str) -> RecommendResponse:
        request = RecommendRequest(user_id=user_id, k=k, context=dict(context))
        return asyncio.run(self.recommender.recommend(request))


@pytest.fixture
def graph(catalog: Catalog, build: Path, executor: ThreadPoolExecutor) -> Graph:
    return Graph(catalog, build, executor)


def ids(response: RecommendResponse) -> list[str]:
    return [item.item_id for item in response.items]


def test_happy_path_runs_every_stage_without_fallbacks(graph: Graph, catalog: Catalog) -> None:
    response = graph.ask("u0", k=3)
    assert response.stages == ["features", "retrieval", "ranking", "rerank"]
    assert response.fallbacks == []
    assert response.known_user
    assert response.score_source == "combiner"
    assert response.to_dict()["score_source"] == "combiner"
    assert response.user_id == "u0"
    assert ids(response) == RANKED_ORDER
    seen = {catalog.item_ids[i] for i in catalog.seen(0)}
    assert seen == {"i1"}
    assert not seen & set(ids(response))
    assert [item.score for item in response.items] == [5.0, 4.0, 3.0]
    assert response.items[0].title == "Title 5"
    assert set(response.stage_ms) == set(response.stages)
    assert response.latency_ms >= 0.0


def test_ranking_gets_the_retrieval_candidates_versions_and_a_bounded_timeout(
    graph: Graph,
) -> None:
    graph.ask("u0", k=3)
    [job] = graph.rank.jobs
    assert job.user.index == 0
    np.testing.assert_array_equal(job.candidates.items, [4, 2, 3, 5, 0])
    assert job.versions == VERSIONS
    [timeout] = graph.rank.timeouts
    assert 0.0 < timeout <= ROOMY.ranking_ms / 1000.0
    [call] = graph.runtime.calls
    assert call.model == USER_TOWER
    assert call.version == VERSIONS[USER_TOWER]


def test_the_response_reports_the_recommenders_versions(graph: Graph) -> None:
    response = graph.ask("u7", k=2)
    assert response.model_versions == VERSIONS
    response.model_versions["combiner"] = 99  # a copy: the recommender's own stays put
    assert graph.recommender.versions == VERSIONS


@pytest.mark.parametrize("k", [1, 5])
def test_k_items_come_back_and_none_seen(graph: Graph, catalog: Catalog, k: int) -> None:
    response = graph.ask("u0", k=k)
    assert len(response.items) == k
    assert "i1" not in ids(response)


def test_an_unknown_user_gets_popular_items_for_the_context(graph: Graph) -> None:
    response = graph.ask("nobody", k=3)
    assert not response.known_user
    assert response.score_source == "popularity"
    assert response.stages == ["features", "cold_start", "rerank"]
    assert response.fallbacks == []
    assert ids(response) == ["i0", "i1", "i2"]  # global popularity
    assert graph.runtime.calls == []
    assert graph.rank.jobs == []
    # Demographics in the context pick the group's list (F aged 22 saw item 1 most).
    grouped = graph.ask("nobody", k=3, gender="F", age="22")
    assert ids(grouped) == ["i1", "i0", "i2"]


def test_retrieval_failing_falls_back_to_popular_and_skips_ranking(
    catalog: Catalog, build: Path, executor: ThreadPoolExecutor
) -> None:
    runtime = FakeRuntime(fail={USER_TOWER: Unavailable("down", model=USER_TOWER)})
    graph = Graph(catalog, build, executor, runtime=runtime)
    response = graph.ask("u0", k=3)
    assert response.fallbacks == ["retrieval:popular"]
    assert response.score_source == "popularity"
    assert response.stages == ["features", "rerank"]
    assert "ranking" not in response.stages
    assert graph.rank.jobs == []
    assert response.known_user
    assert ids(response) == POPULAR_FOR_U0
    assert "i1" not in ids(response)


def test_retrieval_slower_than_its_budget_falls_back_without_waiting_for_it(
    catalog: Catalog, build: Path, executor: ThreadPoolExecutor
) -> None:
    config = GraphConfig(
        candidates=6,
        max_k=5,
        default_k=3,
        budgets=StageBudgets(retrieval_ms=40, ranking_ms=500, rerank_ms=50, total_ms=1000),
        rerank=RerankConfig(mmr_lambda=1.0),
        faults=FaultConfig(delay_ms={"retrieval": 600}),
    )
    graph = Graph(catalog, build, executor, config=config)
    start = time.monotonic()
    response = graph.ask("u0", k=3)
    elapsed = time.monotonic() - start
    assert response.fallbacks == ["retrieval:popular"]
    assert "retrieval" not in response.stages
    assert "ranking" not in response.stages
    assert graph.rank.jobs == []
    assert ids(response) == POPULAR_FOR_U0
    assert elapsed < 0.4, f"waited {elapsed:.3f} s for a 40 ms budget"
    assert response.stage_ms["retrieval"] < 400.0


def test_ranking_failing_falls_back_to_retrieval_order(
    catalog: Catalog, build: Path, executor: ThreadPoolExecutor
) -> None:
    rank = FakeRank(error=Unavailable("ranking replica gone"))
    graph = Graph(catalog, build, executor, rank=rank)
    response = graph.ask("u0", k=3)
    assert response.fallbacks == ["ranking:retrieval_order"]
    assert response.score_source == "two_tower"
    assert response.stages == ["features", "retrieval", "rerank"]
    assert ids(response) == RETRIEVAL_ORDER
    scores = [item.score for item in response.items]
    np.testing.assert_allclose(scores, [0.8, 0.5, 0.3], rtol=1e-5)  # the retrieval scores


def test_ranking_slower_than_its_budget_falls_back_to_retrieval_order(
    catalog: Catalog, build: Path, executor: ThreadPoolExecutor
) -> None:
    config = BASE.with_overrides(
        {"budgets": {"retrieval_ms": 1000, "ranking_ms": 40, "rerank_ms": 50, "total_ms": 2000}}
    )
    rank = FakeRank(sleep_s=2.0)
    graph = Graph(catalog, build, executor, config=config, rank=rank)
    start = time.monotonic()
    response = graph.ask("u0", k=3)
    elapsed = time.monotonic() - start
    assert response.fallbacks == ["ranking:retrieval_order"]
    assert "ranking" not in response.stages
    assert ids(response) == RETRIEVAL_ORDER
    assert rank.finished == 0
    assert rank.timeouts[0] == pytest.approx(0.04, abs=1e-3)
    assert elapsed < 1.0


def test_a_spent_deadline_leaves_ranking_no_time(
    catalog: Catalog, build: Path, executor: ThreadPoolExecutor
) -> None:
    """The clock jumps past the end-to-end deadline during retrieval: ranking gets a zero
    timeout and the request still answers, in retrieval order."""
    offset = [0.0]

    def clock() -> float:
        return time.monotonic() + offset[0]

    def spend(model: str) -> None:
        offset[0] += 10.0  # retrieval "took" 10 s on the recommender's clock

    # The fake ranker would answer at once if it were given any time at all.
    rank = FakeRank(sleep_s=0.05)
    runtime = FakeRuntime(on_infer=spend)
    graph = Graph(catalog, build, executor, runtime=runtime, rank=rank, clock=clock)
    response = graph.ask("u0", k=3)
    assert response.stages == ["features", "retrieval", "rerank"]
    assert response.fallbacks == ["ranking:retrieval_order"]
    assert ids(response) == RETRIEVAL_ORDER
    assert rank.finished == 0
    assert all(t == 0.0 for t in rank.timeouts)  # called with no time, if called at all
    assert response.latency_ms >= 10_000.0  # measured on the injected clock


def test_a_combiner_fallback_inside_ranking_is_reported(
    catalog: Catalog, build: Path, executor: ThreadPoolExecutor
) -> None:
    graph = Graph(catalog, build, executor, rank=FakeRank(fallbacks=["combiner:ranker_mlp"]))
    response = graph.ask("u0", k=3)
    assert response.fallbacks == ["combiner:ranker_mlp"]
    assert response.score_source == "ranker_mlp"
    assert response.stages == ["features", "retrieval", "ranking", "rerank"]
    assert ids(response) == RANKED_ORDER  # the ranking stage's scores are still used


def test_any_inference_error_kind_in_retrieval_falls_back(
    catalog: Catalog, build: Path, executor: ThreadPoolExecutor
) -> None:
    runtime = FakeRuntime(fail={USER_TOWER: ModelNotFound("no version 3", model=USER_TOWER)})
    response = Graph(catalog, build, executor, runtime=runtime).ask("u0")
    assert response.fallbacks == ["retrieval:popular"]
    assert ids(response) == POPULAR_FOR_U0


def test_an_error_that_is_not_an_inference_error_is_not_swallowed(
    catalog: Catalog, build: Path, executor: ThreadPoolExecutor
) -> None:
    def boom(model: str) -> None:
        raise RuntimeError("a bug in the stage")

    graph = Graph(catalog, build, executor, runtime=FakeRuntime(on_infer=boom))
    with pytest.raises(RuntimeError, match="a bug in the stage"):
        graph.ask("u0")


@pytest.mark.parametrize(
    ("user_id", "k", "field"),
    [("u0", 0, "k"), ("u0", 6, "k"), ("u0", -1, "k"), ("", 3, "user_id")],
)
def test_bad_requests_name_the_field(graph: Graph, user_id: str, k: int, field: str) -> None:
    with pytest.raises(BadRequest, match=rf"^{field}:") as raised:
        graph.ask(user_id, k=k)
    assert raised.value.status == 400
    assert graph.runtime.calls == []
    assert graph.features.misses == 0  # rejected before any stage ran


def test_k_equal_to_max_k_is_accepted(graph: Graph) -> None:
    assert len(graph.ask("u0", k=BASE.max_k).items) == BASE.max_k


def test_repeat_requests_are_served_from_the_feature_cache(graph: Graph) -> None:
    first = graph.ask("u0", k=3)
    second = graph.ask("u0", k=3)
    assert ids(first) == ids(second)
    assert (graph.features.misses, graph.features.hits) == (1, 1)


# ---- the answer cache -----------------------------------------------------------------------

CACHED = BASE.with_overrides({"answer_cache": {"ttl_s": 60.0}})


def test_a_repeat_request_is_answered_from_the_cache_and_re_ranked_for_its_k(
    catalog: Catalog, build: Path, executor: ThreadPoolExecutor
) -> None:
    graph = Graph(catalog, build, executor, config=CACHED)
    first = graph.ask("u0", k=3)
    assert first.stages == ["features", "retrieval", "ranking", "rerank"]
    again = graph.ask("u0", k=2)
    assert again.stages == ["features", "answer_cache", "rerank"]
    assert again.fallbacks == []
    assert again.score_source == "combiner"
    assert ids(again) == ids(first)[:2]
    assert len(graph.rank.jobs) == 1  # ranked once
    assert len(graph.runtime.calls) == 1  # the user tower called once
    assert len(graph.recommender.answers) == 1
    graph.ask("u5", k=2)  # another user is another key
    assert len(graph.rank.jobs) == 2


def test_a_degraded_answer_is_not_cached(
    catalog: Catalog, build: Path, executor: ThreadPoolExecutor
) -> None:
    rank = FakeRank(fallbacks=["ranking:truncated"])
    graph = Graph(catalog, build, executor, config=CACHED, rank=rank)
    graph.ask("u0")
    graph.ask("u0")
    assert len(rank.jobs) == 2
    assert len(graph.recommender.answers) == 0


def test_cached_answers_expire_and_the_cache_is_off_by_default(
    catalog: Catalog, build: Path, executor: ThreadPoolExecutor
) -> None:
    now = [0.0]
    graph = Graph(catalog, build, executor, config=CACHED, clock=lambda: now[0])
    graph.ask("u0")
    now[0] = 59.0
    graph.ask("u0")
    assert len(graph.rank.jobs) == 1
    now[0] = 61.0
    graph.ask("u0")
    assert len(graph.rank.jobs) == 2
    plain = Graph(catalog, build, executor)
    plain.ask("u0")
    plain.ask("u0")
    assert len(plain.rank.jobs) == 2
