"""Offline evaluation of the pipeline on a held-out split.

Every ranker is judged the way it is served: on the retrieval stage's candidates (about 1,000
unseen items per user), against the user's held-out positives. A relevant item that retrieval
missed counts against every ranker, as it would online. The popularity baseline (most liked
training items, minus those seen) is the bar to clear.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from contract.arrays import FloatArray, IntArray
from contract.features import FeatureTables
from training import metrics
from training.feeds import Runner, ranker_feed, run_chunked
from training.split import positives, seen_by_user
from training.tables import Interactions

CANDIDATES = 1000


@dataclass(frozen=True)
class EvalSet:
    """Users with at least one held-out positive, what is relevant, and what to exclude."""

    users: IntArray
    relevant: list[IntArray]
    exclude: list[IntArray]

    @property
    def n_relevant(self) -> IntArray:
        return np.array([len(r) for r in self.relevant], dtype=np.int64)


def concat(*parts: Interactions) -> Interactions:
    return Interactions(
        user=np.concatenate([p.user for p in parts]),
        item=np.concatenate([p.item for p in parts]),
        rating=np.concatenate([p.rating for p in parts]),
        timestamp=np.concatenate([p.timestamp for p in parts]),
    )


def eval_set(target: Interactions, history: Interactions, n_users: int) -> EvalSet:
    relevant = seen_by_user(positives(target), n_users)
    exclude = seen_by_user(history, n_users)
    users = np.array([u for u in range(n_users) if len(relevant[u])], dtype=np.int64)
    return EvalSet(users, [relevant[u] for u in users], [exclude[u] for u in users])


def retrieval_metrics(ranked: IntArray, es: EvalSet) -> dict[str, float]:
    hit = metrics.hits(ranked, es.relevant)
    n = es.n_relevant
    out = {
        "recall@100": metrics.recall_at(hit, n, 100),
        "ndcg@10": metrics.ndcg_at(hit, n, 10),
        "mrr": metrics.mrr(hit),
    }
    if ranked.shape[1] >= 1000:
        out["recall@1000"] = metrics.recall_at(hit, n, 1000)
    return out


def score_candidates(
    run: Runner, features: FeatureTables, users: IntArray, candidates: IntArray
) -> FloatArray:
    """Scores of each user's candidates (NaN where the candidate slot is padding)."""
    valid = candidates >= 0
    rows = np.broadcast_to(users[:, None], candidates.shape)[valid]
    logits = run_chunked(run, ranker_feed(features, rows, candidates[valid]), chunk=65536)
    scores = np.full(candidates.shape, np.nan, dtype=np.float32)
    scores[valid] = logits.reshape(len(rows), -1)[:, 0]
    return scores


def ranking_metrics(candidates: IntArray, scores: FloatArray, es: EvalSet) -> dict[str, float]:
    order = metrics.top_k(scores, scores.shape[1])
    ranked = np.take_along_axis(candidates, order, axis=1)
    ranked = np.where(np.take_along_axis(np.isnan(scores), order, axis=1), -1, ranked)
    hit = metrics.hits(ranked, es.relevant)
    labels = metrics.hits(candidates, es.relevant)
    return {
        "ndcg@10": metrics.ndcg_at(hit, es.n_relevant, 10),
        "mrr": metrics.mrr(hit),
        "auc": metrics.auc(scores, labels),
    }


def popularity_ranking(features: FeatureTables, es: EvalSet, k: int = CANDIDATES) -> IntArray:
    """Each user's top-k most-liked training items they have not seen."""
    order = np.argsort(-features.item_popularity, kind="stable")
    k = min(k, len(order))
    ranked = np.full((len(es.users), k), -1, dtype=np.int64)
    for row, exclude in enumerate(es.exclude):
        items = order[~np.isin(order, exclude)][:k]
        ranked[row, : len(items)] = items
    return ranked
