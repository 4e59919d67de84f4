"""The similar-items surface on a small hand-made catalog whose answers are known in advance:
neighbours first in weight order, then the embeddings' order; the query item, a known user's
seen items and deny-listed items never answered; each fallback (no neighbours, a stage that
fails or is late) and unknown items. Also the neighbours file's loader and the per-version
wiring in :class:`~inference.graph.components.Components`."""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
from scipy import sparse

from contract.arrays import FloatArray, IntArray
from contract.graph_config import (
    CacheConfig,
    GraphConfig,
    RerankConfig,
    StageBudgets,
)
from contract.names import SIMILAR_FILE, USER_TOWER
from inference import metrics
from inference.errors import BadRequest, InferenceError, Unavailable
from inference.graph.artifacts import VersionCache
from inference.graph.catalog import Catalog
from inference.graph.components import Components, load_components
from inference.graph.features import CachedFeatureStore, EmbeddedFeatureStore
from inference.graph.neighbours import Neighbours
from inference.graph.settings import GraphSettings
from inference.graph.similar import SimilarItems, score_candidates
from inference.graph.stages import Candidates, ItemSearch
from inference.graph.types import SimilarRequest, SimilarResponse
from tests.unit.inference.graph.test_catalog import N_ITEMS
from tests.unit.inference.graph.test_components import write_repository
from tests.unit.inference.graph.test_stages import FakeRuntime, build_dir


def _unit(degrees: float) -> list[float]:
    return [math.cos(math.radians(degrees)), math.sin(math.radians(degrees))]


#: L2-normalised embeddings at these angles: from item 0, the embeddings alone rank the others
#: 1 (10 degrees), 3 (30), 5 (45), 4 (60), 2 (80).
ANGLES = [0, 10, 80, 30, 60, 45]
EMBEDDINGS: FloatArray = np.array([_unit(a) for a in ANGLES], dtype=np.float32)
#: Item 0's neighbours are the two items its embedding likes least, 2 (0.9) then 4 (0.5), so
#: a neighbour-first answer differs from an embeddings-only one at every position.
NEIGHBOURS = {0: {2: 0.9, 4: 0.5}, 3: {0: 1.0, 5: 0.2}}
BY_EMBEDDING = ["i1", "i3", "i5", "i4", "i2"]
NEIGHBOURS_FIRST = ["i2", "i4", "i1", "i3", "i5"]
VERSIONS = {USER_TOWER: 3, "ranker_dcn": 2, "ranker_mlp": 5, "combiner": 1}
ROOMY = StageBudgets(
    retrieval_ms=2000, ranking_ms=2000, rerank_ms=500, similar_ms=2000, total_ms=5000
)
# mmr_lambda 1: the final order is the score order, so the stage's order is visible.
BASE = GraphConfig(
    candidates=6,
    max_k=5,
    default_k=3,
    similar_candidates=3,
    budgets=ROOMY,
    rerank=RerankConfig(mmr_lambda=1.0),
)


def neighbour_matrix(rows: dict[int, dict[int, float]] = NEIGHBOURS) -> sparse.csr_matrix:
    dense = np.zeros((N_ITEMS, N_ITEMS), dtype=np.float32)
    for item, weights in rows.items():
        for other, weight in weights.items():
            dense[item, other] = weight
    return sparse.csr_matrix(dense)


@pytest.fixture(scope="module")
def build(tmp_path_factory: pytest.TempPathFactory) -> Path:
    directory = build_dir(tmp_path_factory.mktemp("build"), EMBEDDINGS)  # u0 has seen i1
    sparse.save_npz(directory / SIMILAR_FILE, neighbour_matrix())
    return directory


@pytest.fixture(scope="module")
def catalog(build: Path) -> Catalog:
    return Catalog.load(build)


@pytest.fixture
def executor() -> Iterator[ThreadPoolExecutor]:
    pool = ThreadPoolExecutor(2, thread_name_prefix="test-similar")
    yield pool
    pool.shutdown(wait=True)


class FailingSearch(ItemSearch):
    """The item search, failing as a broken dependency would."""

    def search(self, query: FloatArray, n: int, exclude: IntArray) -> Candidates:
        raise Unavailable("item search is down")


def service(
    catalog: Catalog,
    build: Path,
    executor: ThreadPoolExecutor,
    *,
    config: GraphConfig = BASE,
    with_neighbours: bool = True,
    search: ItemSearch | None = None,
) -> SimilarItems:
    neighbours = Neighbours.load(build, catalog.n_items) if with_neighbours else None
    return SimilarItems(
        config=config,
        catalog=catalog,
        features=CachedFeatureStore(EmbeddedFeatureStore(catalog), CacheConfig()),
        search=search or ItemSearch(build),
        neighbours=neighbours,
        versions=VERSIONS,
        executor=executor,
    )


def ask(similar: SimilarItems, item: str, k: int = 5, user: str | None = None) -> SimilarResponse:
    return asyncio.run(similar.similar(SimilarRequest(item_id=item, k=k, user_id=user)))


def ids(response: SimilarResponse) -> list[str]:
    return [item.item_id for item in response.items]


def fallbacks_counted(used: str) -> float:
    return float(metrics.FALLBACKS.labels(stage="similar", fallback=used)._value.get())


def test_neighbours_come_first_in_weight_order_then_the_embeddings(
    catalog: Catalog, build: Path, executor: ThreadPoolExecutor
) -> None:
    response = ask(service(catalog, build, executor), "i0", k=5)
    assert ids(response) == NEIGHBOURS_FIRST
    assert response.fallbacks == []
    assert response.stages == ["similar", "rerank"]
    assert set(response.stage_ms) == set(response.stages)
    assert response.known_item
    assert response.item_id == "i0"
    assert response.model_versions == {USER_TOWER: 3}
    scores = [item.score for item in response.items]
    assert scores == sorted(scores, reverse=True)
    assert scores[0] > 0.9 > 0.5 > scores[2]  # a neighbour's weight beats any embedding
    assert response.items[0].title == "Title 2"
    assert response.items[0].genres == ("Drama",)


def test_the_query_item_and_the_users_seen_items_are_never_answered(
    catalog: Catalog, build: Path, executor: ThreadPoolExecutor
) -> None:
    similar = service(catalog, build, executor)
    seen = {catalog.item_ids[i] for i in catalog.seen(0)}
    assert seen == {"i1"}
    for item in catalog.item_ids:
        everyone = ids(ask(similar, item, k=5))
        assert item not in everyone
        assert len(everyone) == 5
        for_u0 = ask(similar, item, k=5, user="u0")
        assert for_u0.stages == ["features", "similar", "rerank"]
        assert item not in ids(for_u0)
        assert not seen & set(ids(for_u0))
        assert len(for_u0.items) == N_ITEMS - len({item} | seen)  # all the rest
    assert ids(ask(similar, "i0", k=5, user="u0")) == ["i2", "i4", "i3", "i5"]


def test_an_unknown_user_leaves_nothing_out(
    catalog: Catalog, build: Path, executor: ThreadPoolExecutor
) -> None:
    response = ask(service(catalog, build, executor), "i0", k=5, user="nobody")
    assert ids(response) == NEIGHBOURS_FIRST
    assert response.fallbacks == []


def test_deny_listed_items_are_never_answered(
    catalog: Catalog, build: Path, executor: ThreadPoolExecutor
) -> None:
    config = BASE.with_overrides({"rerank": {"deny_items": ["i2", "i3"]}})
    similar = service(catalog, build, executor, config=config)
    assert ids(ask(similar, "i0", k=5)) == ["i4", "i1", "i5"]
    for item in catalog.item_ids:
        assert not {"i2", "i3"} & set(ids(ask(similar, item, k=5)))
    # Also when the stage falls back: popular items pass through the same re-rank.
    slow = config.with_overrides(
        {"budgets": {"similar_ms": 20}, "faults": {"delay_ms": {"similar": 300}}}
    )
    fallback = ask(service(catalog, build, executor, config=slow), "i0", k=3)
    assert fallback.fallbacks == ["similar:popular"]
    assert ids(fallback) == ["i1", "i4", "i5"]


def test_without_neighbours_the_embeddings_answer_alone(
    catalog: Catalog, build: Path, executor: ThreadPoolExecutor
) -> None:
    before = fallbacks_counted("embeddings")
    similar = service(catalog, build, executor, with_neighbours=False)
    response = ask(similar, "i0", k=3)
    assert response.fallbacks == ["similar:embeddings"]
    assert ids(response) == BY_EMBEDDING[:3]
    assert response.stages == ["similar", "rerank"]
    assert fallbacks_counted("embeddings") == before + 1
    # k beyond similar_candidates (3) still gets k answers.
    assert ids(ask(similar, "i0", k=5)) == BY_EMBEDDING


def test_a_stage_slower_than_its_budget_answers_popular_items_within_it(
    catalog: Catalog, build: Path, executor: ThreadPoolExecutor
) -> None:
    config = BASE.with_overrides(
        {"budgets": {"similar_ms": 40}, "faults": {"delay_ms": {"similar": 600}}}
    )
    before = fallbacks_counted("popular")
    similar = service(catalog, build, executor, config=config)
    start = time.monotonic()
    response = ask(similar, "i0", k=3, user="u0")
    elapsed = time.monotonic() - start
    assert response.fallbacks == ["similar:popular"]
    assert "similar" not in response.stages
    assert response.stages == ["features", "rerank"]
    # Global popularity ranks items 0..5 in order; without the query (i0) and u0's i1.
    assert ids(response) == ["i2", "i3", "i4"]
    assert response.known_item
    assert elapsed < 0.4, f"waited {elapsed:.3f} s for a 40 ms budget"
    assert response.stage_ms["similar"] < 400.0
    assert fallbacks_counted("popular") == before + 1


def test_a_failing_stage_answers_popular_items(
    catalog: Catalog, build: Path, executor: ThreadPoolExecutor
) -> None:
    similar = service(catalog, build, executor, search=FailingSearch(build))
    response = ask(similar, "i3", k=4)
    assert response.fallbacks == ["similar:popular"]
    assert ids(response) == ["i0", "i1", "i2", "i4"]


def test_an_unknown_item_gets_popular_items_not_an_error(
    catalog: Catalog, build: Path, executor: ThreadPoolExecutor
) -> None:
    similar = service(catalog, build, executor)
    response = ask(similar, "no-such-item", k=3)
    assert not response.known_item
    assert response.stages == ["cold_start", "rerank"]
    assert response.fallbacks == []
    assert ids(response) == ["i0", "i1", "i2"]
    with_user = ask(similar, "no-such-item", k=3, user="u0")
    assert ids(with_user) == ["i0", "i2", "i3"]
    assert with_user.stages == ["features", "cold_start", "rerank"]


@pytest.mark.parametrize(
    ("request_", "message"),
    [
        (SimilarRequest(item_id="", k=3), "item_id: must be a non-empty string"),
        (SimilarRequest(item_id="i0", k=0), "k: 0 is outside 1..5"),
        (SimilarRequest(item_id="i0", k=6), "k: 6 is outside 1..5"),
        (SimilarRequest(item_id="i0", k=3, user_id=""), "user_id: must not be empty"),
    ],
)
def test_bad_requests_name_the_field(
    catalog: Catalog,
    build: Path,
    executor: ThreadPoolExecutor,
    request_: SimilarRequest,
    message: str,
) -> None:
    similar = service(catalog, build, executor)
    with pytest.raises(BadRequest, match=message):
        asyncio.run(similar.similar(request_))


def test_the_response_renders_as_the_json_api_shows_it(
    catalog: Catalog, build: Path, executor: ThreadPoolExecutor
) -> None:
    body = ask(service(catalog, build, executor), "i0", k=2).to_dict()
    assert set(body) == {
        "item_id",
        "items",
        "model_versions",
        "stages",
        "fallbacks",
        "known_item",
        "latency_ms",
        "stage_ms",
    }
    assert body["items"][0] == {
        "item_id": "i2",
        "score": body["items"][0]["score"],
        "title": "Title 2",
        "genres": ["Drama"],
    }


# --------------------------------------------------------------------------- scoring


def test_score_candidates_unites_the_sources_and_drops_the_excluded() -> None:
    neighbours = (np.array([2, 4, 1]), np.array([0.9, 0.5, 0.3], dtype=np.float32))
    items, scores = score_candidates(
        0, neighbours, np.array([1, 3, 5, 0]), EMBEDDINGS, exclude=np.array([1])
    )
    # 1 is a neighbour and found by embedding, but excluded; 0 is the query.
    np.testing.assert_array_equal(items, [2, 4, 3, 5])
    # The neighbour weight, plus a hundredth of the cosine mapped to [0, 1].
    cos = [math.cos(math.radians(ANGLES[i])) for i in (2, 4, 3, 5)]
    expected = np.array([0.9, 0.5, 0, 0]) + 0.01 * (np.array(cos) + 1) / 2
    np.testing.assert_allclose(scores, expected, rtol=1e-6)
    no_neighbours, cosine = score_candidates(0, None, np.array([5, 1]), EMBEDDINGS, np.array([]))
    np.testing.assert_array_equal(no_neighbours, [1, 5])
    np.testing.assert_allclose(cosine, [math.cos(math.radians(10)), math.cos(math.radians(45))])
    empty, _ = score_candidates(0, None, np.array([0]), EMBEDDINGS, np.array([]))
    assert len(empty) == 0


# --------------------------------------------------------------------------- the neighbours file


def test_neighbours_are_read_heaviest_first(build: Path) -> None:
    neighbours = Neighbours.load(build, N_ITEMS)
    assert neighbours is not None
    items, weights = neighbours.of(0)
    np.testing.assert_array_equal(items, [2, 4])
    np.testing.assert_allclose(weights, [0.9, 0.5])
    assert len(neighbours.of(1)[0]) == 0
    with pytest.raises(IndexError):
        neighbours.of(N_ITEMS)


def test_a_version_without_neighbours_has_none(tmp_path: Path) -> None:
    assert Neighbours.load(tmp_path, N_ITEMS) is None


@pytest.mark.parametrize(
    ("content", "problem"),
    [
        (b"not a zip file", "not a sparse neighbour matrix"),
        (None, "neighbours of 4 items, the catalog has 6"),
        ("nan", "must be finite"),
    ],
)
def test_unreadable_neighbours_fail_naming_the_file(
    tmp_path: Path, content: bytes | str | None, problem: str
) -> None:
    path = tmp_path / SIMILAR_FILE
    if isinstance(content, bytes):
        path.write_bytes(content)
    elif content is None:
        sparse.save_npz(path, sparse.identity(4, format="csr", dtype=np.float32))
    else:
        sparse.save_npz(path, neighbour_matrix({0: {1: float(content)}}))
    with pytest.raises(ValueError, match=problem) as info:
        Neighbours.load(tmp_path, N_ITEMS)
    assert SIMILAR_FILE in str(info.value)


# --------------------------------------------------------------------------- per version


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    """user_tower 1 with neighbours, 2 with a damaged file (both with the stage tests' catalog
    and embeddings)."""
    root = write_repository(tmp_path / "model_repo")
    sparse.save_npz(root / USER_TOWER / "1" / SIMILAR_FILE, neighbour_matrix())
    (root / USER_TOWER / "2" / SIMILAR_FILE).write_bytes(b"damaged")
    return root


@pytest.mark.parametrize(("version", "fallbacks"), [(1, []), (2, ["similar:embeddings"])])
def test_each_user_tower_version_serves_its_own_neighbours(
    repo: Path, executor: ThreadPoolExecutor, version: int, fallbacks: list[str]
) -> None:
    settings = GraphSettings(
        repository=repo, graph=BASE.with_overrides({"model_versions": {USER_TOWER: version}})
    )
    components = load_components(settings, with_ranker=False, runtime=FakeRuntime())
    try:
        similar = components.similar(settings.graph, components.versions, executor=executor)
        response = ask(similar, "i0", k=2)
        assert response.fallbacks == fallbacks
        assert response.model_versions == {USER_TOWER: version}
        assert len(response.items) == 2
        if version == 1:
            assert ids(response) == ["i2", "i4"]
    finally:
        components.close()


def test_components_without_a_neighbours_cache_serve_from_the_embeddings(
    repo: Path, executor: ThreadPoolExecutor
) -> None:
    settings = GraphSettings(repository=repo, graph=BASE)
    loaded = load_components(settings, with_ranker=False, runtime=FakeRuntime())
    try:
        bare = Components(loaded.towers, loaded.runtime, None, loaded.versions, loaded.served)
        assert bare.similar_neighbours(1) is None
        failing: VersionCache[Neighbours | None] = VersionCache(
            _refuse, model=USER_TOWER, what="its similar-items neighbours"
        )
        bare.neighbours = failing
        with pytest.raises(InferenceError, match="cannot load its similar-items neighbours"):
            failing.get(1)
        assert bare.similar_neighbours(1) is None
    finally:
        loaded.close()


def _refuse(version: int) -> Neighbours | None:
    raise OSError(f"version {version}: disk on fire")


# --------------------------------------------------------------------------- configuration


def test_the_config_checks_the_similar_budget_and_the_models_name() -> None:
    from pydantic import ValidationError

    assert GraphConfig().budgets.similar_ms == 10.0
    assert GraphConfig().similar_candidates == 200
    with pytest.raises(ValidationError, match="total_ms must be at least the largest"):
        StageBudgets(similar_ms=60, total_ms=50)
    with pytest.raises(ValidationError, match="'similar_items' is the graph's similar-items"):
        GraphConfig(name="similar_items")
    assert GraphConfig(faults={"delay_ms": {"similar": 5}}).faults.delay_ms == {"similar": 5}
