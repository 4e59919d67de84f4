"""The graph's synchronous stages over a fake model runtime: exact item search, retrieval,
the ranker feed, and ranking with its in-stage combiner fallbacks and version groups."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import faiss
import numpy as np
import numpy.typing as npt
import pytest
from scipy import sparse

from contract.arrays import FloatArray, IntArray
from contract.candidates import ITEM_ITEM, POPULAR, SHARES
from contract.features import HISTORY_LENGTH
from contract.names import COMBINER, RANKERS, USER_TOWER
from contract.ranking import RANKING, Preranker
from contract.signature import Signature
from inference.errors import InferenceError, ModelNotFound, Unavailable
from inference.graph.catalog import Catalog
from inference.graph.features import EmbeddedFeatureStore, UserFeatures
from inference.graph.item_item import ItemItemScores
from inference.graph.stages import (
    Candidates,
    ItemSearch,
    Ranker,
    RankJob,
    Retriever,
    plan_candidates,
    ranker_feed,
)
from inference.runtime import ModelRuntime, Tensors
from tests.unit.inference.graph.test_catalog import N_ITEMS, write_build

# Item embeddings (dim 2) and the user tower's fixed query: item scores are the first column,
# so the best-first order of all items is 1, 4, 2, 3, 5, 0.
EMBEDDINGS: FloatArray = np.array(
    [[0.1, 0.0], [0.9, 0.0], [0.5, 0.5], [0.3, 0.2], [0.8, 0.1], [0.2, 0.7]], dtype=np.float32
)
QUERY: FloatArray = np.array([1.0, 0.0], dtype=np.float32)
ITEM_SCORES: FloatArray = EMBEDDINGS @ QUERY
#: User 0 has seen item 1 (the best one) in the build's ``seen.npz``.
SEEN = {0: [1]}


@dataclass(frozen=True)
class Call:
    model: str
    version: int | None
    timeout_s: float | None
    inputs: dict[str, npt.NDArray[np.generic]]

    @property
    def shapes(self) -> dict[str, tuple[int, ...]]:
        return {name: tuple(array.shape) for name, array in self.inputs.items()}


def dcn_logit(item_ids: npt.NDArray[np.generic]) -> FloatArray:
    """The fake DCN ranker prefers higher item ids (ids are index + 1)."""
    return np.asarray(item_ids, dtype=np.float32).reshape(-1, 1)


def mlp_logit(item_ids: npt.NDArray[np.generic]) -> FloatArray:
    """The fake MLP ranker prefers lower item ids."""
    return -10.0 * np.asarray(item_ids, dtype=np.float32).reshape(-1, 1)


def combine(scores: npt.NDArray[np.generic]) -> FloatArray:
    """The fake combiner: a fixed weighting of (dcn, mlp, retrieval[, item-item]) columns."""
    s: FloatArray = np.asarray(scores, dtype=np.float32)
    weights: FloatArray = np.array([0.5, 0.25, 100.0, 1.0], dtype=np.float32)
    return (s @ weights[: s.shape[1]]).reshape(-1, 1)


class FakeRuntime:
    """A :class:`ModelRuntime` with deterministic outputs that records every call (thread-safe:
    the ranker calls both rankers from a pool) and raises the errors it is told to."""

    kind = "fake"

    def __init__(
        self,
        query: FloatArray = QUERY,
        fail: Mapping[str, InferenceError] | None = None,
        on_infer: Callable[[str], None] | None = None,
    ) -> None:
        self.query = query
        self.fail: dict[str, InferenceError] = dict(fail or {})
        self.on_infer = on_infer
        self.calls: list[Call] = []
        self._lock = threading.Lock()

    def infer(
        self,
        model: str,
        inputs: Mapping[str, npt.NDArray[np.generic]],
        *,
        outputs: Sequence[str] | None = None,
        version: int | None = None,
        timeout_s: float | None = None,
    ) -> Tensors:
        copied = {name: np.array(array, copy=True) for name, array in inputs.items()}
        with self._lock:
            self.calls.append(Call(model, version, timeout_s, copied))
        if self.on_infer is not None:
            self.on_infer(model)
        if model in self.fail:
            raise self.fail[model]
        if model == USER_TOWER:
            batch = copied["user_id"].shape[0]
            return {"user_embedding": np.tile(self.query, (batch, 1)).astype(np.float32)}
        if model == RANKERS[0]:
            return {"logit": dcn_logit(copied["item_id"])}
        if model == RANKERS[1]:
            return {"logit": mlp_logit(copied["item_id"])}
        if model == COMBINER:
            return {"score": combine(copied["scores"])}
        if model == RANKING:  # the same arithmetic, from the compact feed
            ids = copied["item_id"]
            assert len(copied["owner"]) == len(ids)
            assert int(copied["owner"].max()) < len(copied["user_dense"])
            extra = [copied["item_item"]] if "item_item" in copied else []
            stacked = np.concatenate(
                [dcn_logit(ids), mlp_logit(ids), copied["retrieval"], *extra], axis=1
            )
            return {"score": combine(stacked)}
        raise ModelNotFound("no such model", model=model)

    def check_models(self, required: Mapping[str, Signature]) -> None:
        missing = sorted(set(required) - {USER_TOWER, *RANKERS, COMBINER})
        if missing:
            raise ModelNotFound(f"missing {missing}")

    def close(self) -> None:
        pass

    def calls_of(self, model: str) -> list[Call]:
        with self._lock:
            return [c for c in self.calls if c.model == model]


def build_dir(directory: Path, embeddings: FloatArray = EMBEDDINGS) -> Path:
    """The test catalog's build directory with item embeddings of shape (n_items, dim)."""
    write_build(directory, catalog=True, seen=SEEN)
    np.save(directory / "item_embeddings.npy", embeddings)
    return directory


@pytest.fixture
def build(tmp_path: Path) -> Path:
    return build_dir(tmp_path / "build")


@pytest.fixture
def catalog(build: Path) -> Catalog:
    return Catalog.load(build)


@pytest.fixture
def pool() -> Iterator[ThreadPoolExecutor]:
    executor = ThreadPoolExecutor(2, thread_name_prefix="test-ranker")
    yield executor
    executor.shutdown(wait=True)


def user(catalog: Catalog, user_id: str = "u0") -> UserFeatures:
    features = EmbeddedFeatureStore(catalog).user(user_id)
    assert features is not None
    return features


def ints(*values: int) -> IntArray:
    return np.array(values, dtype=np.int64)


def candidates(*items: int) -> Candidates:
    chosen = ints(*items)
    return Candidates(chosen, ITEM_SCORES[chosen].astype(np.float32))


def _runtime_is_a_model_runtime() -> ModelRuntime:
    return FakeRuntime()  # mypy checks that the fake satisfies the protocol


# ---- ItemSearch -----------------------------------------------------------------------------


def test_the_fake_runtime_matches_the_protocol() -> None:
    runtime = _runtime_is_a_model_runtime()
    assert runtime.kind == "fake"
    out = runtime.infer(USER_TOWER, {"user_id": np.zeros((3, 1), dtype=np.int64)})
    assert out["user_embedding"].shape == (3, EMBEDDINGS.shape[1])


def test_exact_search_is_chosen_for_a_small_catalog(build: Path) -> None:
    search = ItemSearch(build)
    assert search.exact
    assert search.index is None
    assert search.embeddings.shape == (N_ITEMS, 2)
    assert search.embeddings.dtype == np.float32


def test_exact_search_returns_the_n_best_unseen_items_best_first(build: Path) -> None:
    search = ItemSearch(build, exact=True)
    found = search.search(QUERY, 3, ints(4))
    np.testing.assert_array_equal(found.items, [1, 2, 3])
    np.testing.assert_allclose(found.scores, [0.9, 0.5, 0.3], rtol=1e-6)
    assert found.items.dtype == np.int64
    assert found.scores.dtype == np.float32


def test_exact_search_without_exclusions_matches_a_full_sort(build: Path) -> None:
    search = ItemSearch(build, exact=True)
    found = search.search(QUERY, 4, ints())
    expected = np.argsort(-ITEM_SCORES, kind="stable")[:4]
    np.testing.assert_array_equal(found.items, expected)
    assert list(found.scores) == sorted(found.scores, reverse=True)


def test_exact_search_asking_for_more_than_is_left_returns_every_unseen_item(
    build: Path,
) -> None:
    search = ItemSearch(build, exact=True)
    found = search.search(QUERY, 100, ints(1, 4, 4))  # a repeated exclusion counts once
    np.testing.assert_array_equal(found.items, [2, 3, 5, 0])
    assert np.all(np.isfinite(found.scores))
    everything = search.search(QUERY, 3, np.arange(N_ITEMS, dtype=np.int64))
    assert len(everything.items) == 0


def test_exact_search_does_not_change_the_embeddings(build: Path) -> None:
    search = ItemSearch(build, exact=True)
    before = search.embeddings.copy()
    search.search(QUERY, 2, ints(0, 1))
    np.testing.assert_array_equal(search.embeddings, before)


@pytest.mark.parametrize(
    ("n", "exclude"), [(3, [4]), (6, []), (100, [1, 4, 4]), (3, list(range(N_ITEMS)))]
)
def test_the_faiss_index_path_agrees_with_exact_search(
    build: Path, n: int, exclude: list[int]
) -> None:
    index = faiss.IndexHNSWFlat(EMBEDDINGS.shape[1], 8, faiss.METRIC_INNER_PRODUCT)
    index.add(EMBEDDINGS)
    faiss.write_index(index, str(build / "item_index.faiss"))
    approximate = ItemSearch(build, exact=False)
    assert approximate.index is not None
    seen = np.array(exclude, dtype=np.int64)
    found = approximate.search(QUERY, n, seen)
    expected = ItemSearch(build, exact=True).search(QUERY, n, seen)
    np.testing.assert_array_equal(found.items, expected.items)
    np.testing.assert_allclose(found.scores, expected.scores, rtol=1e-6)
    assert found.items.dtype == np.int64


# ---- Retriever ------------------------------------------------------------------------------


def test_retriever_feeds_the_user_tower_and_excludes_seen_items(
    build: Path, catalog: Catalog
) -> None:
    runtime = FakeRuntime()
    retriever = Retriever(runtime, ItemSearch(build), {USER_TOWER: 3})
    u0 = user(catalog, "u0")
    found = retriever(u0, 3, timeout_s=0.25)
    np.testing.assert_array_equal(found.items, [4, 2, 3])  # item 1 is seen
    [call] = runtime.calls
    assert call.model == USER_TOWER
    assert call.timeout_s == 0.25
    assert call.shapes == {
        "user_id": (1, 1),
        "user_dense": (1, catalog.features.user_dense.shape[1]),
        "history": (1, HISTORY_LENGTH),
    }
    assert call.inputs["user_id"].dtype == np.int64
    assert int(call.inputs["user_id"][0, 0]) == u0.model_id == 1
    assert call.inputs["user_dense"].dtype == np.float32
    np.testing.assert_array_equal(call.inputs["history"][0], catalog.features.history[0])


def test_retriever_uses_its_versions_unless_the_call_overrides_them(
    build: Path, catalog: Catalog
) -> None:
    runtime = FakeRuntime()
    retriever = Retriever(runtime, ItemSearch(build), {USER_TOWER: 3, "ranker_dcn": 1})
    u5 = user(catalog, "u5")
    retriever(u5, 2)
    retriever(u5, 2, versions={USER_TOWER: 7})
    retriever(u5, 2, versions={"ranker_dcn": 2})  # no user tower pin: the latest
    assert [c.version for c in runtime.calls] == [3, 7, None]
    assert runtime.calls[0].timeout_s is None


def test_retriever_lets_runtime_errors_through(build: Path, catalog: Catalog) -> None:
    runtime = FakeRuntime(fail={USER_TOWER: Unavailable("down", model=USER_TOWER)})
    retriever = Retriever(runtime, ItemSearch(build), {})
    with pytest.raises(Unavailable, match="user_tower"):
        retriever(user(catalog), 3)


def test_retriever_merges_the_item_item_and_segment_sources(
    build: Path, catalog: Catalog, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With the other sources, candidates also come from the user's history (item-item) and
    their segment's popular items; each carries its sources, towers' score and item-item score."""
    # Shares large enough for a six-item catalogue to give each source a slot.
    monkeypatch.setitem(SHARES, ITEM_ITEM, 0.25)
    monkeypatch.setitem(SHARES, POPULAR, 0.25)
    # Item 0 is the towers' worst; the item-item weights link user 0's item 1 to it alone.
    weights = np.zeros((N_ITEMS, N_ITEMS), dtype=np.float32)
    weights[1, 0] = 0.7
    scores = ItemItemScores(sparse.csr_matrix(weights))
    retriever = Retriever(
        FakeRuntime(),
        ItemSearch(build),
        {USER_TOWER: 3, COMBINER: 1},
        catalog=catalog,
        item_item=lambda version: scores,
    )
    found = retriever(user(catalog, "u0"), 4)
    assert found.items[0] == 4  # the towers' best unseen item leads
    assert found.items[1] == 0  # then the item-item source's best, which the towers ranked last
    assert 1 not in found.items  # seen
    assert found.sources is not None
    assert found.found_by(ITEM_ITEM) == 1
    assert found.found_by(POPULAR) >= 1
    np.testing.assert_allclose(found.scores, ITEM_SCORES[found.items], rtol=1e-6)
    assert found.item_item is not None
    np.testing.assert_allclose(found.item_item, [0.7 if i == 0 else 0.0 for i in found.items])
    head = found.head(2)
    assert head.sources is not None
    assert head.item_item is not None
    assert len(head.sources) == len(head.item_item) == 2


def test_retriever_leaves_out_a_source_whose_weights_cannot_be_read(
    build: Path, catalog: Catalog
) -> None:
    def broken(version: int) -> ItemItemScores | None:
        raise InferenceError(f"combiner version {version}: item_item.npz is corrupt")

    retriever = Retriever(
        FakeRuntime(), ItemSearch(build), {COMBINER: 1}, catalog=catalog, item_item=broken
    )
    found = retriever(user(catalog, "u0"), 3)
    assert found.found_by(ITEM_ITEM) == 0
    assert found.item_item is None
    assert len(found.items) == 3


# ---- ranker_feed ----------------------------------------------------------------------------


def test_ranker_feed_repeats_user_columns_per_candidate(catalog: Catalog) -> None:
    u0, u30 = user(catalog, "u0"), user(catalog, "u30")
    jobs = [RankJob(u0, candidates(4, 2, 3)), RankJob(u30, candidates(0, 5))]
    feed = ranker_feed(catalog, jobs)
    n = 5
    user_dim = catalog.features.user_dense.shape[1]
    item_dim = catalog.features.item_dense.shape[1]
    assert {name: array.shape for name, array in feed.items()} == {
        "user_id": (n, 1),
        "item_id": (n, 1),
        "user_dense": (n, user_dim),
        "item_dense": (n, item_dim),
        "history": (n, HISTORY_LENGTH),
    }
    assert feed["user_id"].dtype == np.int64
    assert feed["item_id"].dtype == np.int64
    assert feed["user_dense"].dtype == np.float32
    assert feed["history"].dtype == np.int64
    np.testing.assert_array_equal(feed["user_id"][:, 0], [1, 1, 1, 31, 31])
    np.testing.assert_array_equal(feed["item_id"][:, 0], [5, 3, 4, 1, 6])  # index + 1
    np.testing.assert_array_equal(feed["user_dense"][:3], np.repeat(u0.dense[None], 3, axis=0))
    np.testing.assert_array_equal(feed["user_dense"][3:], np.repeat(u30.dense[None], 2, axis=0))
    np.testing.assert_array_equal(feed["item_dense"], catalog.features.item_dense[[4, 2, 3, 0, 5]])


def test_ranker_feed_blanks_each_candidate_out_of_its_users_history(catalog: Catalog) -> None:
    u0, u30 = user(catalog, "u0"), user(catalog, "u30")
    # The build's histories: u0 saw item 3 (id 4), u30 saw item 4 (id 5), at position 0.
    assert int(u0.history[0]) == 4
    assert int(u30.history[0]) == 5
    jobs = [RankJob(u0, candidates(3, 4)), RankJob(u30, candidates(3, 4))]
    history = ranker_feed(catalog, jobs)["history"]
    assert [int(h) for h in history[:, 0]] == [0, 4, 5, 0]
    # Only the candidate itself is blanked; the rest of each row is the user's history.
    np.testing.assert_array_equal(history[1], u0.history)
    np.testing.assert_array_equal(history[2], u30.history)
    # The catalog's own tables are untouched.
    assert int(catalog.features.history[0, 0]) == 4


# ---- Ranker ---------------------------------------------------------------------------------

VERSIONS = {USER_TOWER: 1, RANKERS[0]: 1, RANKERS[1]: 1, COMBINER: 1}


def expected_combined(chosen: Candidates) -> FloatArray:
    ids = chosen.items + 1
    stacked = np.stack(
        [dcn_logit(ids)[:, 0], mlp_logit(ids)[:, 0], chosen.scores.astype(np.float32)], axis=1
    )
    return combine(stacked).reshape(-1)


def test_ranker_with_every_model_up_returns_combiner_scores(
    catalog: Catalog, pool: ThreadPoolExecutor
) -> None:
    runtime = FakeRuntime()
    errors: list[tuple[str, InferenceError]] = []
    ranker = Ranker(
        runtime,
        catalog,
        VERSIONS,
        pool=pool,
        on_model_error=lambda m, e: errors.append((m, e)),
    )
    chosen = candidates(4, 2, 3)
    [result] = ranker([RankJob(user(catalog), chosen)], timeout_s=1.0)
    assert result.fallbacks == []
    assert result.batch_size == 1
    np.testing.assert_allclose(result.scores, expected_combined(chosen), rtol=1e-6)
    assert result.scores.dtype == np.float32
    assert sorted(c.model for c in runtime.calls) == sorted([*RANKERS, COMBINER])
    assert all(c.version == 1 for c in runtime.calls)
    [combiner] = runtime.calls_of(COMBINER)
    assert combiner.shapes == {"scores": (3, 3)}
    assert combiner.timeout_s is not None
    assert 0.0 <= combiner.timeout_s <= 1.0
    for model in RANKERS:
        [call] = runtime.calls_of(model)
        assert call.timeout_s == 1.0
        assert call.shapes["item_id"] == (3, 1)
    assert errors == []


def test_ranker_without_a_timeout_passes_none_on(
    catalog: Catalog, pool: ThreadPoolExecutor
) -> None:
    runtime = FakeRuntime()
    Ranker(runtime, catalog, VERSIONS, pool=pool)([RankJob(user(catalog), candidates(0, 2))])
    assert [c.timeout_s for c in runtime.calls] == [None, None, None]


def test_a_failing_combiner_falls_back_to_the_dcn_logits(
    catalog: Catalog, pool: ThreadPoolExecutor
) -> None:
    failure = Unavailable("overloaded", model=COMBINER)
    runtime = FakeRuntime(fail={COMBINER: failure})
    errors: list[tuple[str, InferenceError]] = []
    ranker = Ranker(
        runtime, catalog, VERSIONS, pool=pool, on_model_error=lambda m, e: errors.append((m, e))
    )
    chosen = candidates(4, 2, 3)
    [result] = ranker([RankJob(user(catalog), chosen)], timeout_s=1.0)
    assert result.fallbacks == ["combiner:ranker_dcn"]
    np.testing.assert_allclose(result.scores, dcn_logit(chosen.items + 1).reshape(-1))
    assert errors == [(COMBINER, failure)]


@pytest.mark.parametrize(
    ("down", "survivor"),
    [(RANKERS[0], RANKERS[1]), (RANKERS[1], RANKERS[0])],
)
def test_one_failing_ranker_falls_back_to_the_other(
    catalog: Catalog, pool: ThreadPoolExecutor, down: str, survivor: str
) -> None:
    failure = ModelNotFound("not loaded", model=down)
    runtime = FakeRuntime(fail={down: failure})
    errors: list[tuple[str, InferenceError]] = []
    ranker = Ranker(
        runtime, catalog, VERSIONS, pool=pool, on_model_error=lambda m, e: errors.append((m, e))
    )
    chosen = candidates(0, 5, 3)
    [result] = ranker([RankJob(user(catalog), chosen)], timeout_s=1.0)
    assert result.fallbacks == [f"combiner:{survivor}"]
    logit = dcn_logit if survivor == RANKERS[0] else mlp_logit
    np.testing.assert_allclose(result.scores, logit(chosen.items + 1).reshape(-1))
    assert runtime.calls_of(COMBINER) == []  # no combiner call with one ranker missing
    assert errors == [(down, failure)]


def test_both_rankers_failing_raises(catalog: Catalog, pool: ThreadPoolExecutor) -> None:
    runtime = FakeRuntime(
        fail={
            RANKERS[0]: Unavailable("down", model=RANKERS[0]),
            RANKERS[1]: ModelNotFound("gone", model=RANKERS[1]),
        }
    )
    errors: list[str] = []
    ranker = Ranker(
        runtime, catalog, VERSIONS, pool=pool, on_model_error=lambda m, e: errors.append(m)
    )
    with pytest.raises(InferenceError, match="ranker_"):
        ranker([RankJob(user(catalog), candidates(0, 1))], timeout_s=1.0)
    assert sorted(errors) == sorted(RANKERS)
    assert runtime.calls_of(COMBINER) == []


def test_jobs_asking_for_other_versions_are_ranked_in_their_own_group(
    catalog: Catalog, pool: ThreadPoolExecutor
) -> None:
    runtime = FakeRuntime()
    ranker = Ranker(runtime, catalog, VERSIONS, pool=pool)
    v2 = {USER_TOWER: 1, RANKERS[0]: 2, RANKERS[1]: 2, COMBINER: 2}
    jobs = [
        RankJob(user(catalog, "u0"), candidates(4, 2, 3)),
        RankJob(user(catalog, "u30"), candidates(0, 5), versions=v2),
        RankJob(
            user(catalog, "u1"),
            candidates(
                5,
            ),
        ),
        # Its versions equal the ranker's defaults: it joins the default group.
        RankJob(user(catalog, "u40"), candidates(2, 3), versions=dict(VERSIONS)),
    ]
    results = ranker(jobs, timeout_s=1.0)
    assert len(results) == len(jobs)
    for job, result in zip(jobs, results, strict=True):
        np.testing.assert_allclose(result.scores, expected_combined(job.candidates), rtol=1e-6)
        assert result.fallbacks == []
        assert result.batch_size == len(jobs)
    # One call per model per group, never mixing versions within a call.
    for model in (*RANKERS, COMBINER):
        calls = runtime.calls_of(model)
        assert sorted(c.version or 0 for c in calls) == [1, 2]
        rows = {c.version: c.inputs["scores" if model == COMBINER else "item_id"] for c in calls}
        assert rows[1].shape[0] == 3 + 1 + 2
        assert rows[2].shape[0] == 2
    dcn_v2 = next(c for c in runtime.calls_of(RANKERS[0]) if c.version == 2)
    np.testing.assert_array_equal(dcn_v2.inputs["item_id"][:, 0], [1, 6])
    np.testing.assert_array_equal(dcn_v2.inputs["user_id"][:, 0], [31, 31])


def test_a_failure_in_one_version_group_degrades_only_that_group(
    catalog: Catalog, pool: ThreadPoolExecutor
) -> None:
    class FailV2(FakeRuntime):
        def infer(
            self,
            model: str,
            inputs: Mapping[str, npt.NDArray[np.generic]],
            *,
            outputs: Sequence[str] | None = None,
            version: int | None = None,
            timeout_s: float | None = None,
        ) -> Tensors:
            if model == COMBINER and version == 2:
                raise Unavailable("v2 combiner down", model=model)
            return super().infer(model, inputs, version=version, timeout_s=timeout_s)

    ranker = Ranker(FailV2(), catalog, VERSIONS, pool=pool)
    v2 = {**VERSIONS, COMBINER: 2}
    jobs = [
        RankJob(user(catalog, "u0"), candidates(4, 2)),
        RankJob(user(catalog, "u1"), candidates(0, 5), versions=v2),
    ]
    first, second = ranker(jobs, timeout_s=1.0)
    assert first.fallbacks == []
    assert second.fallbacks == ["combiner:ranker_dcn"]
    np.testing.assert_allclose(second.scores, dcn_logit(ints(1, 6)).reshape(-1))
    assert first.batch_size == second.batch_size == 2


@pytest.mark.parametrize(
    ("sizes", "budget_s", "cost", "floor", "expected"),
    [
        ([1000, 1000], 1.0, 1e-4, 100, [1000, 1000]),  # fits: unchanged
        ([1000, 1000], 0.05, 1e-4, 100, [250, 250]),  # 500 candidates fit, shared
        ([1000, 1000], 0.001, 1e-4, 100, [100, 100]),  # never below the floor
        ([1000, 50], 0.001, 1e-4, 100, [100, 50]),  # nor above a job's size
        ([1000], 0.01, 0.0, 100, [1000]),  # no measurement yet: rank everything
    ],
)
def test_plan_candidates_fits_the_budget_within_bounds(
    sizes: list[int], budget_s: float, cost: float, floor: int, expected: list[int]
) -> None:
    assert plan_candidates(sizes, budget_s, cost, floor) == expected


def test_under_a_tight_budget_only_the_head_is_ranked(
    catalog: Catalog, pool: ThreadPoolExecutor
) -> None:
    runtime = FakeRuntime()
    ranker = Ranker(runtime, catalog, VERSIONS, pool=pool, min_ranked=2)
    ranker.fixed_seconds_per_candidate = 1.0  # as if measured under load: too slow for all
    chosen = candidates(4, 2, 3, 1)
    [result] = ranker([RankJob(user(catalog), chosen)], timeout_s=0.001)
    assert result.fallbacks == ["ranking:truncated"]
    np.testing.assert_allclose(result.scores, expected_combined(chosen.head(2)), rtol=1e-6)
    for model in RANKERS:
        [call] = runtime.calls_of(model)
        assert call.shapes["item_id"] == (2, 1)


def test_the_cost_estimate_of_a_burst_does_not_outlive_its_contention(
    catalog: Catalog, pool: ThreadPoolExecutor
) -> None:
    """While other calls rank, the median recent cost plans the batch; alone, the least:
    the first request after a burst is ranked in full, not truncated by the burst's cost."""
    ranker = Ranker(FakeRuntime(), catalog, VERSIONS, pool=pool, min_ranked=2)
    now = time.monotonic()
    for cost in (1e-6, 1.0, 1.0):  # one quiet call, two under a burst
        ranker._costs.append((now, cost))
    assert ranker.seconds_per_candidate == 1e-6
    ranker._in_flight = 1  # another call is ranking now
    assert ranker.seconds_per_candidate == 1.0
    ranker._in_flight = 0
    chosen = candidates(4, 2, 3, 1)
    [result] = ranker([RankJob(user(catalog), chosen)], timeout_s=0.05)
    assert result.fallbacks == []
    assert len(result.scores) == 4
    assert ranker._in_flight == 0  # released after the call


def test_a_combiner_version_with_item_item_weights_gets_a_fourth_score(
    catalog: Catalog, pool: ThreadPoolExecutor, tmp_path: Path
) -> None:
    """The fourth column is, per candidate, the sum of the weights from the user's items."""
    from scipy import sparse

    from contract.names import ITEM_ITEM_FILE
    from inference.graph.artifacts import VersionCache
    from inference.graph.item_item import ItemItemScores

    n = len(catalog.item_ids)
    weights = np.arange(n * n, dtype=np.float32).reshape(n, n) / 100.0
    with_weights = tmp_path / "combiner" / "2"
    with_weights.mkdir(parents=True)
    sparse.save_npz(with_weights / ITEM_ITEM_FILE, sparse.csr_matrix(weights))
    (tmp_path / "combiner" / "1").mkdir()  # built before item-item weights: three inputs
    broken = tmp_path / "combiner" / "3"
    broken.mkdir()
    (broken / ITEM_ITEM_FILE).write_bytes(b"not a matrix")
    cache = VersionCache(
        lambda version: ItemItemScores.load(tmp_path / "combiner" / str(version)),
        model=COMBINER,
        what="its item-item weights",
    )
    assert cache.get(1) is None
    assert isinstance(cache.get(2), ItemItemScores)
    runtime = FakeRuntime()
    ranker = Ranker(runtime, catalog, VERSIONS, pool=pool, item_item=cache.get)
    who = user(catalog)
    assert len(who.seen) > 0
    chosen = candidates(4, 2, 3)
    ranker([RankJob(who, chosen)], timeout_s=1.0)
    ranker([RankJob(who, chosen, versions={**VERSIONS, COMBINER: 2})], timeout_s=1.0)
    old, new = (call.inputs["scores"] for call in runtime.calls_of(COMBINER))
    assert old.shape == (3, 3)
    assert new.shape == (3, 4)
    np.testing.assert_allclose(new[:, 3], weights[who.seen].sum(axis=0)[chosen.items], rtol=1e-6)
    np.testing.assert_array_equal(new[:, :3], old)
    # Weights that cannot be read degrade as a failed combiner does: the DCN ranker's order.
    errors: list[tuple[str, InferenceError]] = []
    ranker = Ranker(
        runtime,
        catalog,
        VERSIONS,
        pool=pool,
        item_item=cache.get,
        on_model_error=lambda m, e: errors.append((m, e)),
    )
    [result] = ranker([RankJob(who, chosen, versions={**VERSIONS, COMBINER: 3})], timeout_s=1.0)
    assert result.fallbacks == [f"combiner:{RANKERS[0]}"]
    assert [m for m, _ in errors] == [COMBINER]
    assert "version 3: cannot load its item-item weights" in str(errors[0][1])


def test_item_item_scores_ignore_what_the_weights_do_not_know() -> None:
    from scipy import sparse

    from inference.graph.item_item import ItemItemScores

    scores = ItemItemScores(sparse.csr_matrix(np.array([[0, 1, 2], [3, 0, 4], [5, 6, 0]], "f4")))
    np.testing.assert_array_equal(scores.scores(ints(0, 1), ints(2, 0, 7, -1)), [6, 3, 0, 0])
    np.testing.assert_array_equal(scores.scores(ints(), ints(0, 1)), [0, 0])  # cold user
    np.testing.assert_array_equal(scores.scores(ints(9), ints(0)), [0])  # unknown item seen


def test_sparse_item_item_weights_score_as_dense_ones() -> None:
    from scipy import sparse

    from inference.graph.item_item import ItemItemScores

    rng = np.random.default_rng(0)
    dense = np.where(rng.random((40, 40)) < 0.1, rng.random((40, 40)), 0.0).astype(np.float32)
    seen, items = ints(1, 5, 9), ints(0, 3, 39)
    expected = dense[seen].sum(axis=0)[items]
    np.testing.assert_allclose(
        ItemItemScores(sparse.csr_matrix(dense)).scores(seen, items), expected, rtol=1e-6
    )


def test_the_one_call_model_ranks_every_job_in_one_call_sending_users_once(
    catalog: Catalog, pool: ThreadPoolExecutor
) -> None:
    runtime = FakeRuntime()
    ranker = Ranker(runtime, catalog, VERSIONS, pool=pool, one_call=lambda versions: 7)
    first, second = candidates(4, 2, 3), candidates(0, 1)
    results = ranker(
        [RankJob(user(catalog), first), RankJob(user(catalog, "u1"), second)], timeout_s=1.0
    )
    [call] = runtime.calls
    assert (call.model, call.version) == (RANKING, 7)
    assert call.shapes["user_dense"][0] == 2  # once per user, not per candidate
    assert call.shapes["item_id"] == (5, 1)
    assert call.inputs["owner"].tolist() == [0, 0, 0, 1, 1]
    for result, chosen in zip(results, (first, second), strict=True):
        assert result.fallbacks == []
        np.testing.assert_allclose(result.scores, expected_combined(chosen), rtol=1e-6)
        assert result.items is not None
        assert result.items.tolist() == chosen.items.tolist()


def test_a_missing_one_call_model_leaves_the_separate_models_to_answer(
    catalog: Catalog, pool: ThreadPoolExecutor
) -> None:
    runtime = FakeRuntime(fail={RANKING: ModelNotFound("not loaded", model=RANKING)})
    errors: list[str] = []
    ranker = Ranker(
        runtime,
        catalog,
        VERSIONS,
        pool=pool,
        one_call=lambda versions: 1,
        on_model_error=lambda model, exc: errors.append(model),
    )
    chosen = candidates(4, 2, 3)
    for _ in range(2):
        [result] = ranker([RankJob(user(catalog), chosen)], timeout_s=1.0)
        assert result.fallbacks == []  # same answer, from the separate models
        np.testing.assert_allclose(result.scores, expected_combined(chosen), rtol=1e-6)
    assert len(runtime.calls_of(RANKING)) == 1  # not asked again while it is missing
    assert len(runtime.calls_of(COMBINER)) == 2
    assert errors == [RANKING]


def test_without_a_one_call_model_for_the_versions_the_separate_models_rank(
    catalog: Catalog, pool: ThreadPoolExecutor
) -> None:
    runtime = FakeRuntime()
    ranker = Ranker(runtime, catalog, VERSIONS, pool=pool, one_call=lambda versions: None)
    ranker([RankJob(user(catalog), candidates(4, 2, 3))], timeout_s=1.0)
    assert sorted(c.model for c in runtime.calls) == sorted([*RANKERS, COMBINER])


def test_the_preranker_sends_only_its_head_best_first_to_the_rankers(
    catalog: Catalog, pool: ThreadPoolExecutor
) -> None:
    runtime = FakeRuntime()
    preranker = Preranker(w_retrieval=1.0, w_item_item=0.0, bias=0.0, head=2)
    ranker = Ranker(runtime, catalog, VERSIONS, pool=pool, prerankers=lambda version: preranker)
    chosen = candidates(0, 1, 2, 3, 4)
    [result] = ranker([RankJob(user(catalog), chosen)], timeout_s=1.0)
    best = np.argsort(-chosen.scores, kind="stable")[:2]
    assert result.items is not None
    assert result.items.tolist() == chosen.items[best].tolist()
    np.testing.assert_allclose(result.scores, expected_combined(chosen.take(best)), rtol=1e-6)
    assert all(c.shapes["item_id"] == (2, 1) for c in runtime.calls_of(RANKERS[0]))
    assert result.fallbacks == []  # the head is the design, not a degradation

    everything = Ranker(
        runtime, catalog, VERSIONS, pool=pool, prerankers=lambda version: preranker, head=0
    )
    [result] = everything([RankJob(user(catalog), chosen)], timeout_s=1.0)
    assert result.items is not None
    assert result.items.tolist() == chosen.items.tolist()


def test_an_unreadable_preranker_ranks_every_candidate(
    catalog: Catalog, pool: ThreadPoolExecutor
) -> None:
    def broken(version: int) -> Preranker | None:
        raise InferenceError("version 1: cannot load its pre-ranker", model=COMBINER)

    ranker = Ranker(FakeRuntime(), catalog, VERSIONS, pool=pool, prerankers=broken)
    chosen = candidates(0, 1, 2, 3, 4)
    [result] = ranker([RankJob(user(catalog), chosen)], timeout_s=1.0)
    assert result.items is not None
    assert len(result.items) == 5
    assert result.fallbacks == []


def test_preranker_select_takes_the_best_and_all_when_the_head_covers_them() -> None:
    preranker = Preranker(w_retrieval=1.0, w_item_item=2.0, bias=0.5, head=2)
    retrieval = np.array([0.1, 0.9, 0.5, 0.2], dtype=np.float32)
    item_item = np.array([0.5, 0.0, 0.0, np.nan], dtype=np.float32)  # NaN counts as 0
    assert preranker.select(retrieval, item_item, 2).tolist() == [0, 1]
    assert preranker.select(retrieval, None, 3).tolist() == [1, 2, 3]
    assert preranker.select(retrieval, item_item, 0).tolist() == [0, 1, 2, 3]
    assert preranker.select(retrieval, item_item, 9).tolist() == [0, 1, 2, 3]


def test_a_preranker_file_round_trips_and_a_bad_one_says_so(tmp_path: Path) -> None:
    preranker = Preranker(w_retrieval=1.5, w_item_item=-2.0, bias=0.25, head=150)
    preranker.save(tmp_path / "preranker.json")
    assert Preranker.load(tmp_path / "preranker.json") == preranker
    (tmp_path / "bad.json").write_text('{"head": 3}')
    with pytest.raises(ValueError, match="not a pre-ranker"):
        Preranker.load(tmp_path / "bad.json")
