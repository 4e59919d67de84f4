"""Similar items: the neighbours the build ships for the similar-items surface, and their
offline evaluation.

Asked "what is like item i", the best single-item answer on MovieLens is not EASE's row (an
item-item model fit to predict a whole profile) nor the embeddings' cosine, but co-occurrence
with a lean towards neighbours popular enough to be consumed next: asymmetric cosine
(:mod:`contract.similar`), its ``alpha`` chosen on the validation split, ``0.5`` (plain cosine,
the item-kNN baseline) among the choices. The evaluation asks what a user consumed next after
their latest liked item, on the time-ordered split.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from scipy import sparse

from contract.arrays import FloatArray, IntArray
from contract.similar import NEIGHBOURS, similar_scores
from training import metrics
from training.split import positives
from training.tables import Interactions

log = logging.getLogger("cascade.training")

#: The ``alpha`` values tried; 0.5 is plain cosine.
ALPHAS = (0.5, 0.6, 0.7, 0.8, 0.9)
#: How many of the items a user liked after the query item count as the right answers.
NEXT = 5


@dataclass(frozen=True)
class Queries:
    """One query per user: their latest liked item before the target period, the items they
    liked next (relevant), and everything they had seen by then (excluded, as
    ``/v1/similar`` with their ``user_id`` excludes it)."""

    items: IntArray
    relevant: list[IntArray]
    exclude: list[IntArray]

    @property
    def n_relevant(self) -> IntArray:
        return np.array([len(r) for r in self.relevant], dtype=np.int64)


def next_item_queries(history: Interactions, target: Interactions, n_users: int) -> Queries:
    """Users with a liked item in ``history`` and one in ``target`` (which follows it)."""
    liked, wanted = positives(history), positives(target)
    by_time = np.lexsort((-liked.timestamp, liked.user))  # newest first per user
    users, first = np.unique(liked.user[by_time], return_index=True)
    latest = np.full(n_users, -1, dtype=np.int64)
    latest[users] = liked.item[by_time][first]
    order = np.lexsort((np.arange(len(wanted)), wanted.timestamp, wanted.user))
    w_user, w_item = wanted.user[order], wanted.item[order]
    bounds = np.searchsorted(w_user, np.arange(n_users + 1))
    seen_order = np.lexsort((history.item, history.user))
    s_user, s_item = history.user[seen_order], history.item[seen_order]
    s_bounds = np.searchsorted(s_user, np.arange(n_users + 1))
    items, relevant, exclude = [], [], []
    for user in range(n_users):
        if latest[user] < 0 or bounds[user] == bounds[user + 1]:
            continue
        items.append(latest[user])
        relevant.append(w_item[bounds[user] : bounds[user + 1]][:NEXT])
        exclude.append(np.unique(s_item[s_bounds[user] : s_bounds[user + 1]]))
    return Queries(np.array(items, dtype=np.int64), relevant, exclude)


def fit_neighbours(
    matrix: sparse.csr_matrix, alpha: float, neighbours: int = NEIGHBOURS
) -> sparse.csr_matrix:
    """Each item's ``neighbours`` best by asymmetric cosine of co-occurrence, CSR items x
    items with weights in (0, 1]; memory grows as items x ``neighbours``."""
    binary = matrix.astype(np.float32)
    counts = np.asarray(binary.sum(axis=0)).ravel()
    co = sparse.csr_matrix(binary.T @ binary)
    co.setdiag(0.0)
    co.eliminate_zeros()
    rows = np.repeat(np.arange(co.shape[0]), np.diff(co.indptr))
    denominator = np.maximum(counts[rows], 1) ** alpha * np.maximum(counts[co.indices], 1) ** (
        1 - alpha
    )
    co.data = (co.data / denominator).astype(np.float32)
    return top_per_row(co, neighbours)


def top_per_row(similarity: sparse.csr_matrix, keep: int) -> sparse.csr_matrix:
    """``similarity`` with only each row's ``keep`` largest entries."""
    n = similarity.shape[0]
    indptr, indices, data = [0], [np.zeros(0, np.int32)], [np.zeros(0, np.float32)]
    for row in range(n):
        start, end = similarity.indptr[row], similarity.indptr[row + 1]
        best = np.argsort(-similarity.data[start:end], kind="stable")[:keep]
        indices.append(similarity.indices[start:end][best])
        data.append(similarity.data[start:end][best])
        indptr.append(indptr[-1] + len(best))
    return sparse.csr_matrix(
        (np.concatenate(data), np.concatenate(indices), np.array(indptr)),
        shape=similarity.shape,
        dtype=np.float32,
    )


def rank_similar(
    queries: Queries,
    neighbours: sparse.csr_matrix | None,
    embeddings: FloatArray | None,
    k: int = 10,
) -> IntArray:
    """Each query's top-k by the served rule (:func:`contract.similar.similar_scores`), never
    the query item nor an excluded one; -1 pads."""
    blocks = []
    for start in range(0, len(queries.items), 512):
        block = queries.items[start : start + 512]
        weights = None if neighbours is None else neighbours[block].toarray()
        cosine = None if embeddings is None else embeddings[block] @ embeddings.T
        blocks.append(_top(similar_scores(weights, cosine), queries, start, k))
    return np.concatenate(blocks)


def popular_similar(queries: Queries, popularity: FloatArray, k: int = 10) -> IntArray:
    """The most liked items, minus the query and the excluded: what any item would get."""
    scores = np.tile(popularity.astype(np.float32), (len(queries.items), 1))
    return _top(scores, queries, 0, k)


def _top(scores: FloatArray, queries: Queries, offset: int, k: int) -> IntArray:
    """Top-k columns of each row of ``scores`` (queries ``offset`` onwards), the query item
    and its excluded items left out; -1 pads."""
    scores = np.array(scores, dtype=np.float32)
    for row in range(len(scores)):
        scores[row, queries.items[offset + row]] = np.nan
        scores[row, queries.exclude[offset + row]] = np.nan
    order = metrics.top_k(scores, min(k, scores.shape[1]))
    return np.where(np.take_along_axis(np.isnan(scores), order, axis=1), -1, order)


def similar_metrics(ranked: IntArray, queries: Queries) -> dict[str, float]:
    hit = metrics.hits(ranked, queries.relevant)
    return {
        "ndcg@10": metrics.ndcg_at(hit, queries.n_relevant, 10),
        "hit_rate@10": float(hit[:, :10].any(axis=1).mean()),
    }


def choose_alpha(
    matrix: sparse.csr_matrix,
    queries: Queries,
    embeddings: FloatArray | None,
    alphas: Sequence[float] = ALPHAS,
) -> tuple[float, float]:
    """The ``alpha`` whose neighbours answer the validation queries best: (alpha, NDCG@10)."""
    best = (alphas[0], -1.0)
    for alpha in alphas:
        ranked = rank_similar(queries, fit_neighbours(matrix, alpha), embeddings)
        ndcg = similar_metrics(ranked, queries)["ndcg@10"]
        if ndcg > best[1]:
            best = (alpha, ndcg)
    log.info("   similar items: alpha %g chosen on the validation split (NDCG@10 %.4f)", *best)
    return best
