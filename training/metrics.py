"""Offline ranking metrics over per-user ranked lists (pure numpy).

A ranking is a matrix of item indices, one row per evaluated user, best first, padded with -1.
Relevance is binary: an item is relevant when it is one of the user's held-out positives.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import numpy.typing as npt

from contract.arrays import BoolArray, FloatArray, IntArray


def hits(ranked: IntArray, relevant: list[IntArray]) -> BoolArray:
    """``hits[u, r]`` is true when the item at rank ``r`` for user ``u`` is relevant."""
    out = np.zeros(ranked.shape, dtype=np.bool_)
    for row, items in enumerate(relevant):
        out[row] = np.isin(ranked[row], items) & (ranked[row] >= 0)
    return out


def recall_at(hit: BoolArray, n_relevant: IntArray, k: int) -> float:
    """Mean over users of (relevant items in the top k) / (all the user's relevant items).

    The plain definition, as in most recommender papers: recall@k can stay below 1 for a perfect
    ranking when a user has more than k relevant items.
    """
    found = hit[:, :k].sum(axis=1)
    return float(np.mean(found / np.maximum(n_relevant, 1)))


def ndcg_at(hit: BoolArray, n_relevant: IntArray, k: int) -> float:
    discounts = 1.0 / np.log2(np.arange(2, k + 2))
    dcg = (hit[:, :k] * discounts[: hit[:, :k].shape[1]]).sum(axis=1)
    ideal = np.cumsum(discounts)[np.minimum(n_relevant, k) - 1]
    return float(np.mean(np.where(n_relevant > 0, dcg / ideal, 0.0)))


def mrr(hit: BoolArray) -> float:
    first = np.argmax(hit, axis=1)
    found = hit.any(axis=1)
    return float(np.mean(np.where(found, 1.0 / (first + 1), 0.0)))


def auc(scores: FloatArray, labels: BoolArray) -> float:
    """Mean per-user ROC AUC; rows are users, columns candidates (NaN scores are padding).

    Users with no positive or no negative candidate are skipped. Ties count one half.
    """
    values: list[float] = []
    for row_scores, row_labels in zip(scores, labels, strict=True):
        valid = ~np.isnan(row_scores)
        s, y = row_scores[valid], row_labels[valid]
        n_pos = int(y.sum())
        n_neg = len(y) - n_pos
        if n_pos == 0 or n_neg == 0:
            continue
        ranks = _average_ranks(s)
        values.append(float((ranks[y].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg)))
    return float(np.mean(values)) if values else float("nan")


def _average_ranks(values: npt.NDArray[np.floating[Any]]) -> npt.NDArray[np.float64]:
    order = np.argsort(values, kind="mergesort")
    ranks = np.empty(len(values), dtype=np.float64)
    sorted_values = values[order]
    starts = np.flatnonzero(np.r_[True, sorted_values[1:] != sorted_values[:-1]])
    ends = np.r_[starts[1:], len(values)]
    for start, end in zip(starts, ends, strict=True):
        ranks[order[start:end]] = (start + end + 1) / 2.0
    return ranks


def top_k(scores: FloatArray, k: int) -> IntArray:
    """Column indices of the k best scores per row, best first (NaN ranks last)."""
    k = min(k, scores.shape[1])
    filled = np.where(np.isnan(scores), -np.inf, scores)
    part = np.argpartition(-filled, k - 1, axis=1)[:, :k]
    rows = np.arange(scores.shape[0])[:, None]
    order = np.argsort(-filled[rows, part], axis=1, kind="stable")
    return np.asarray(part[rows, order], dtype=np.int64)
