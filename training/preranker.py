"""The pre-ranker: which of the merged candidates go on to the rankers.

Production recommenders rank in a cascade: a cheap score cuts the candidates to a head, and
only the head pays for the heavy models. Cascade's cheap score is a logistic blend of the two
scores retrieval has already computed for every candidate (the towers' and the item-item
score, :class:`contract.ranking.Preranker`), so pre-ranking costs no model call. The head size
is the quality gate's choice: the smallest of :data:`HEADS` whose pipeline NDCG@10 on the
validation split stays within :data:`TOLERANCE` of ranking every candidate.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import numpy.typing as npt

from contract.arrays import FloatArray, IntArray
from contract.ranking import Preranker
from training.evaluation import EvalSet, ranking_metrics

#: Head sizes the gate tries, smallest first.
HEADS = (100, 150, 200, 300, 500)
#: The most NDCG@10 the head may cost, relative to ranking every candidate.
TOLERANCE = 0.01


def fit_weights(
    retrieval: FloatArray,
    item_item: FloatArray,
    labels: npt.NDArray[np.bool_],
    iterations: int = 25,
) -> tuple[float, float, float]:
    """Logistic regression of ``labels`` on the two scores (Newton's method, a little ridge
    so a constant column cannot make it singular); NaN rows (padding) are left out."""
    rows = ~(np.isnan(retrieval) | np.isnan(item_item))
    x = np.stack([retrieval[rows], item_item[rows], np.ones(int(rows.sum()))], axis=1)
    y = labels[rows].astype(np.float64)
    w = np.zeros(3)
    for _ in range(iterations):
        p = 1.0 / (1.0 + np.exp(-np.clip(x @ w, -30, 30)))
        gradient = x.T @ (p - y) + 1e-6 * w
        hessian = (x * (p * (1 - p))[:, None]).T @ x + 1e-6 * np.eye(3)
        step = np.linalg.solve(hessian, gradient)
        w -= step
        if np.abs(step).max() < 1e-8:
            break
    return float(w[0]), float(w[1]), float(w[2])


def head_metrics(
    items: IntArray,
    final: FloatArray,
    prerank: FloatArray,
    es: EvalSet,
    heads: tuple[int, ...] = HEADS,
) -> dict[int, float]:
    """Pipeline NDCG@10 when only each user's ``head`` best pre-ranked candidates are ranked
    (0: every candidate). ``final``: the pipeline's scores of all candidates (NaN: padding)."""
    out = {0: ranking_metrics(items, final, es)["ndcg@10"]}
    for head in heads:
        if head < items.shape[1]:
            kept = np.where(head_mask(prerank, head), final, np.nan)
            out[head] = ranking_metrics(items, kept, es)["ndcg@10"]
    return out


def head_mask(prerank: FloatArray, head: int) -> npt.NDArray[np.bool_]:
    """Which candidates are among each row's ``head`` best pre-ranked (all when 0)."""
    if head <= 0 or head >= prerank.shape[1]:
        return np.ones(prerank.shape, dtype=bool)
    order = np.argsort(-np.nan_to_num(prerank, nan=-np.inf), axis=1, kind="stable")
    mask = np.zeros(prerank.shape, dtype=bool)
    np.put_along_axis(mask, order[:, :head], True, axis=1)
    return mask


def choose(
    retrieval: FloatArray,
    item_item: FloatArray,
    labels: npt.NDArray[np.bool_],
    items: IntArray,
    final: FloatArray,
    es: EvalSet,
) -> tuple[Preranker, dict[str, Any]]:
    """The pre-ranker fit on these (validation) candidates, with the smallest head that keeps
    NDCG@10 within :data:`TOLERANCE` of ranking all; and what the choice saw."""
    w_retrieval, w_item_item, bias = fit_weights(retrieval, item_item, labels)
    scorer = Preranker(w_retrieval, w_item_item, bias, head=0)
    by_head = head_metrics(items, final, scorer.scores(retrieval, item_item), es)
    full = by_head[0]
    passing = [h for h in sorted(by_head) if h > 0 and by_head[h] >= (1 - TOLERANCE) * full]
    head = passing[0] if passing else 0
    chosen = Preranker(w_retrieval, w_item_item, bias, head)
    return chosen, {
        "head": head,
        "weights": {"retrieval": w_retrieval, "item_item": w_item_item, "bias": bias},
        "validation_ndcg@10_by_head": {str(h): v for h, v in by_head.items()},
        "rule": f"smallest head within {TOLERANCE:.0%} of ranking every candidate (0: all)",
    }
