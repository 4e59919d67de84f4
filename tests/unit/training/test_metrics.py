"""Ranking metrics against hand-computed values."""

from __future__ import annotations

import math

import numpy as np
import pytest

from training import metrics


def test_ndcg_recall_mrr_by_hand() -> None:
    ranked = np.array([[5, 1, 7, 3], [2, 4, 6, -1]])
    relevant = [np.array([1, 3]), np.array([9])]
    hit = metrics.hits(ranked, relevant)
    n = np.array([2, 1])
    dcg = 1 / math.log2(3) + 1 / math.log2(5)
    ideal = 1 + 1 / math.log2(3)
    assert metrics.ndcg_at(hit, n, 10) == pytest.approx((dcg / ideal + 0) / 2)
    assert metrics.recall_at(hit, n, 2) == pytest.approx((0.5 + 0) / 2)
    assert metrics.mrr(hit) == pytest.approx((1 / 2 + 0) / 2)


def test_perfect_ranking_scores_one() -> None:
    hit = metrics.hits(np.array([[1, 2, 3]]), [np.array([1, 2])])
    assert metrics.ndcg_at(hit, np.array([2]), 10) == pytest.approx(1.0)


def test_auc_matches_pair_counting_with_ties_and_padding() -> None:
    rng = np.random.default_rng(1)
    scores = rng.integers(0, 5, size=(20, 30)).astype(np.float32)
    labels = rng.random((20, 30)) < 0.3
    scores[:, -3:] = np.nan
    expected = []
    for s, y in zip(scores, labels, strict=True):
        s, y = s[:-3], y[:-3]
        pos, neg = s[y], s[~y]
        if len(pos) and len(neg):
            wins = (pos[:, None] > neg[None, :]).sum() + 0.5 * (pos[:, None] == neg[None, :]).sum()
            expected.append(wins / (len(pos) * len(neg)))
    assert metrics.auc(scores, labels) == pytest.approx(np.mean(expected))


def test_top_k_orders_best_first_and_sinks_nan() -> None:
    scores = np.array([[0.1, np.nan, 0.9, 0.5]], dtype=np.float32)
    assert metrics.top_k(scores, 4).tolist() == [[2, 3, 0, 1]]
