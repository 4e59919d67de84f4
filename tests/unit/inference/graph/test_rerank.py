"""Re-rank policy and diversity on small constructed candidate sets with known answers."""

from __future__ import annotations

import time
from typing import Any

import numpy as np
import pytest

from contract.arrays import BoolArray, FloatArray, IntArray
from contract.graph_config import BusinessRule, RerankConfig
from inference.graph.rerank import rerank, resolve_deny, unknown_genres

NAMES = ["a", "b", "c"]
# Items 0-3 are all genre a, 4 is b, 5 is c, 6 is a+b, 7 has no genre.
GENRES: BoolArray = np.array(
    [[1, 0, 0], [1, 0, 0], [1, 0, 0], [1, 0, 0], [0, 1, 0], [0, 0, 1], [1, 1, 0], [0, 0, 0]],
    dtype=np.bool_,
)
ITEMS: IntArray = np.arange(6, dtype=np.int64)
SCORES: FloatArray = np.array([1.0, 0.99, 0.98, 0.97, 0.9, 0.85], dtype=np.float32)


def run(
    items: IntArray = ITEMS,
    scores: FloatArray = SCORES,
    k: int = 3,
    *,
    genres: BoolArray = GENRES,
    **config: Any,
) -> tuple[list[int], list[float]]:
    exclude = config.pop("exclude", None)
    deny = config.pop("deny", None)
    chosen, final = rerank(
        items,
        scores,
        k,
        catalog_genres=genres,
        genre_names=NAMES[: genres.shape[1]],
        config=RerankConfig(**config),
        exclude=exclude,
        deny=deny,
    )
    assert chosen.dtype == np.int64
    assert len(chosen) == len(final)
    return chosen.tolist(), final.tolist()


def ids(values: list[int]) -> IntArray:
    return np.array(values, dtype=np.int64)


def test_lambda_one_is_the_top_k_by_score() -> None:
    rng = np.random.default_rng(7)
    genres = rng.random((500, 3)) < 0.4
    items = rng.permutation(500)[:300].astype(np.int64)
    scores = rng.normal(size=300).astype(np.float32)
    chosen, final = run(items, scores, 20, genres=genres, mmr_lambda=1.0)
    top = np.argsort(-scores, kind="stable")[:20]
    assert chosen == items[top].tolist()
    np.testing.assert_allclose(final, scores[top], rtol=1e-6)


def test_lower_lambda_trades_relevance_for_genre_diversity() -> None:
    by_score, _ = run(mmr_lambda=1.0)
    diverse, final = run(mmr_lambda=0.5)
    assert by_score == [0, 1, 2]
    assert diverse == [0, 4, 5]
    assert len({tuple(GENRES[i]) for i in diverse}) > len({tuple(GENRES[i]) for i in by_score})
    np.testing.assert_allclose(final, SCORES[[0, 4, 5]])  # scores, not the MMR objective


def test_partial_genre_overlap_is_penalised_less_than_full() -> None:
    # After item 0 (a): item 6 (a+b) has Jaccard 1/2, item 1 (a) has 1.
    items, scores = ids([0, 1, 6]), np.array([1.0, 0.9, 0.8], dtype=np.float32)
    assert run(items, scores, 2, mmr_lambda=1.0)[0] == [0, 1]
    assert run(items, scores, 2, mmr_lambda=0.4)[0] == [0, 6]


def test_items_without_genres_are_never_similar() -> None:
    items, scores = ids([0, 1, 7]), np.array([1.0, 0.6, 0.5], dtype=np.float32)
    assert run(items, scores, 2, mmr_lambda=1.0)[0] == [0, 1]
    assert run(items, scores, 2, mmr_lambda=0.5)[0] == [0, 7]


def test_seen_and_denied_items_are_removed() -> None:
    chosen, _ = run(k=6, mmr_lambda=1.0, exclude=ids([0, 2]), deny=ids([4]))
    assert chosen == [1, 3, 5]


def test_exclude_genres_removes_items() -> None:
    rule = BusinessRule(name="no-a", exclude_genres=("a",))
    assert run(k=6, mmr_lambda=1.0, rules=(rule,))[0] == [4, 5]


def test_boost_multiplies_scores_and_can_reorder() -> None:
    rule = BusinessRule(name="c-up", boost_genres=("c",), factor=2.0)
    chosen, final = run(k=2, mmr_lambda=1.0, rules=(rule,))
    assert chosen == [5, 0]
    np.testing.assert_allclose(final, [1.7, 1.0], rtol=1e-6)


def test_rules_apply_in_order_and_compose() -> None:
    rules = (
        BusinessRule(name="b-up", boost_genres=("b",), factor=2.0),
        BusinessRule(name="b-up-again", boost_genres=("b",), factor=1.5),
        BusinessRule(name="no-c", exclude_genres=("c",)),
    )
    chosen, final = run(k=6, mmr_lambda=1.0, rules=rules)
    assert chosen == [4, 0, 1, 2, 3]
    assert final[0] == pytest.approx(0.9 * 3.0)


def test_max_per_genre_caps_each_genre() -> None:
    rule = BusinessRule(name="cap", max_per_genre=2)
    assert run(k=5, mmr_lambda=1.0, rules=(rule,))[0] == [0, 1, 4, 5]


def test_an_item_counts_against_every_genre_it_has() -> None:
    rule = BusinessRule(name="cap", max_per_genre=1)
    items, scores = ids([6, 0, 4, 5]), np.array([1.0, 0.9, 0.8, 0.7], dtype=np.float32)
    assert run(items, scores, 4, mmr_lambda=1.0, rules=(rule,))[0] == [6, 5]


def test_the_tightest_cap_wins() -> None:
    rules = (
        BusinessRule(name="loose", max_per_genre=3),
        BusinessRule(name="tight", max_per_genre=1),
    )
    assert run(k=6, mmr_lambda=1.0, rules=rules)[0] == [0, 4, 5]


def test_unknown_rule_genres_are_ignored_and_reported() -> None:
    rule = BusinessRule(name="typo", exclude_genres=("Acton",), boost_genres=("a", "zz"), factor=3)
    config = RerankConfig(rules=(rule,))
    assert unknown_genres(config, NAMES) == ["Acton", "zz"]
    assert run(k=6, mmr_lambda=1.0, rules=(rule,))[0] == [0, 1, 2, 3, 4, 5]


def test_k_beyond_the_candidates_returns_them_all() -> None:
    chosen, _ = run(k=50, mmr_lambda=0.7)
    assert sorted(chosen) == ITEMS.tolist()
    assert chosen[0] == 0


def test_no_candidates_left_gives_an_empty_answer() -> None:
    assert run(k=3, exclude=ITEMS) == ([], [])
    assert run(ids([]), np.zeros(0, dtype=np.float32), 3) == ([], [])


def test_duplicate_candidates_are_returned_once() -> None:
    items, scores = ids([2, 2, 1]), np.array([0.5, 0.9, 0.1], dtype=np.float32)
    assert run(items, scores, 3, mmr_lambda=1.0)[0] == [2, 1]


def test_equal_scores_keep_every_candidate() -> None:
    chosen, final = run(scores=np.ones(6, dtype=np.float32), k=6, mmr_lambda=0.6)
    assert sorted(chosen) == ITEMS.tolist()
    assert final == [1.0] * 6


@pytest.mark.parametrize(
    ("items", "scores", "k", "message"),
    [
        (ITEMS, SCORES, 0, "k must"),
        (ITEMS, SCORES[:5], 3, "shapes"),
        (ITEMS.reshape(2, 3), SCORES.reshape(2, 3), 3, "shapes"),
        (ids([0, 99]), SCORES[:2], 1, "item indices"),
        (ids([-1, 0]), SCORES[:2], 1, "item indices"),
        (ITEMS, np.array([1, np.nan, 0, 0, 0, 0], dtype=np.float32), 3, "finite"),
    ],
)
def test_bad_input_is_rejected(items: IntArray, scores: FloatArray, k: int, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        run(items, scores, k)


def test_genre_names_must_match_the_genre_matrix() -> None:
    with pytest.raises(ValueError, match="genre names"):
        rerank(
            ITEMS,
            SCORES,
            3,
            catalog_genres=GENRES,
            genre_names=["a"],
            config=RerankConfig(),
        )


def test_resolve_deny_ignores_unknown_ids() -> None:
    index = {"x": 3, "y": 5}
    np.testing.assert_array_equal(resolve_deny(index, ["y", "nope", "x"]), [5, 3])
    assert resolve_deny(index, []).dtype == np.int64


def test_a_thousand_candidates_rerank_within_a_millisecond() -> None:
    rng = np.random.default_rng(0)
    genres = rng.random((2000, 19)) < 0.12
    items = rng.permutation(2000)[:1000].astype(np.int64)
    scores = rng.random(1000).astype(np.float32)
    seen = rng.permutation(2000)[:200].astype(np.int64)
    names = [f"g{i}" for i in range(19)]
    config = RerankConfig(
        mmr_lambda=0.7, rules=(BusinessRule(name="r", boost_genres=("g1",), max_per_genre=3),)
    )
    best = np.inf
    for _ in range(20):
        start = time.perf_counter()
        chosen, _ = rerank(
            items, scores, 10, catalog_genres=genres, genre_names=names, config=config, exclude=seen
        )
        best = min(best, time.perf_counter() - start)
    assert len(chosen) == 10
    assert best < 1e-3
