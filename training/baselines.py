"""The simple baselines a recommender must beat: EASE and item-kNN, beside popularity.

EASE (Steck, "Embarrassingly Shallow Autoencoders", WWW 2019) is an item-item model with a
closed form: with ``X`` the users x items interaction matrix and ``P = (X'X + lambda I)^-1``,
the weights are ``B = -P / diag(P)`` with a zero diagonal, and a user's scores are ``x_u B``.
It takes seconds to fit on tens of thousands of items and is, on public benchmarks, as strong
as most neural recommenders; a pipeline that loses to it is not worth its serving cost.
Item-kNN scores an item by its cosine similarity to the user's items, over each item's
``neighbours`` most similar ones.

Both fit on the interactions the pipeline's models train on, and rank the whole catalogue
minus what the user has seen, as the popularity baseline does.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from scipy import sparse

from contract.arrays import FloatArray, IntArray
from training import metrics
from training.similar import fit_neighbours
from training.tables import Interactions

log = logging.getLogger("cascade.training")

#: The regularisation strengths tried for EASE, the best on the validation split kept.
EASE_LAMBDAS = (10.0, 50.0, 100.0, 250.0, 500.0, 1000.0, 2500.0)
#: EASE inverts an items x items matrix: past this many items it is left out (and the report
#: says so) rather than take minutes and gigabytes; item-kNN, sparse, still runs.
EASE_MAX_ITEMS = 20_000


def interaction_matrix(events: Interactions, n_users: int, n_items: int) -> sparse.csr_matrix:
    """Binary users x items matrix: 1 where the user interacted with the item at all."""
    data = np.ones(len(events), dtype=np.float32)
    matrix = sparse.csr_matrix((data, (events.user, events.item)), shape=(n_users, n_items))
    matrix.data[:] = 1.0  # repeated events count once
    return matrix


@dataclass(frozen=True)
class ItemItem:
    """An item-item model: a user's scores are their interaction row times ``weights``."""

    name: str
    weights: FloatArray | sparse.csr_matrix  # (items, items)
    detail: dict[str, float]

    def candidate_scores(
        self, matrix: sparse.csr_matrix, users: IntArray, items: IntArray
    ) -> FloatArray:
        """(users, depth) scores of each user's candidate items (NaN where ``items`` is -1)."""
        out = np.full(items.shape, np.nan, dtype=np.float32)
        for start in range(0, len(users), 1024):
            block = self.scores(matrix, users[start : start + 1024])
            rows = items[start : start + 1024]
            picked = np.take_along_axis(block, np.maximum(rows, 0), axis=1)
            out[start : start + 1024] = np.where(rows >= 0, picked, np.nan)
        return out

    def refit(self, matrix: sparse.csr_matrix) -> ItemItem:
        """The same model, with the same settings, fit on ``matrix`` (all the data)."""
        if self.name == "ease":
            gram = (matrix.T @ matrix).toarray().astype(np.float32)
            return ItemItem("ease", fit_ease(gram, self.detail["lambda"]), dict(self.detail))
        neighbours = int(self.detail.get("neighbours", 100))
        return ItemItem(self.name, fit_item_knn(matrix, neighbours), dict(self.detail))

    def save(self, path: Path) -> None:
        """The weights as CSR (``scipy.sparse.save_npz``), the form serving reads."""
        sparse.save_npz(path, sparse.csr_matrix(self.weights, dtype=np.float32))

    def scores(self, matrix: sparse.csr_matrix, users: IntArray) -> FloatArray:
        out = matrix[users] @ self.weights
        dense = out.toarray() if sparse.issparse(out) else np.asarray(out)
        return dense.astype(np.float32, copy=False)

    def rank(
        self, matrix: sparse.csr_matrix, users: IntArray, exclude: Sequence[IntArray], k: int
    ) -> IntArray:
        """Each user's top-k items, best first, never one in their ``exclude`` list."""
        ranked = np.full((len(users), min(k, matrix.shape[1])), -1, dtype=np.int64)
        for start in range(0, len(users), 1024):
            rows = users[start : start + 1024]
            scores = self.scores(matrix, rows)
            for row, seen in enumerate(exclude[start : start + 1024]):
                scores[row, seen] = np.nan
            ranked[start : start + len(rows)] = _top(scores, ranked.shape[1])
        return ranked


def fit_item_item(
    matrix: sparse.csr_matrix,
    valid_users: IntArray,
    valid_relevant: Sequence[IntArray],
    valid_exclude: Sequence[IntArray],
) -> ItemItem:
    """The pipeline's item-item source: EASE (lambda chosen on validation), or item-kNN for
    a catalogue past EASE's limit."""
    ease = choose_ease(matrix, valid_users, valid_relevant, valid_exclude)
    if ease is not None:
        return ease
    return ItemItem("item_knn", fit_item_knn(matrix), {"neighbours": 100})


def fit_ease(gram: FloatArray, lam: float) -> FloatArray:
    """EASE's weights from the Gram matrix ``X'X`` (items x items) and ``lambda``."""
    g = gram.astype(np.float64, copy=True)
    g[np.diag_indices_from(g)] += lam
    p = np.linalg.inv(g)
    b = -p / np.diag(p)
    np.fill_diagonal(b, 0.0)
    return b.astype(np.float32)


def fit_item_knn(matrix: sparse.csr_matrix, neighbours: int = 100) -> sparse.csr_matrix:
    """Cosine item-item similarities, each item keeping only its ``neighbours`` best (sparse,
    so memory grows with items x neighbours, not items squared): asymmetric cosine with
    ``alpha`` 0.5."""
    return fit_neighbours(matrix, 0.5, neighbours)


def choose_ease(
    matrix: sparse.csr_matrix,
    valid_users: IntArray,
    valid_relevant: Sequence[IntArray],
    valid_exclude: Sequence[IntArray],
    lambdas: Sequence[float] = EASE_LAMBDAS,
) -> ItemItem | None:
    """EASE with the ``lambda`` that ranks the validation split best (NDCG@10); None when
    the catalogue is past :data:`EASE_MAX_ITEMS`."""
    if matrix.shape[1] > EASE_MAX_ITEMS:
        log.warning(
            "   EASE left out: %d items is past its limit of %d", matrix.shape[1], EASE_MAX_ITEMS
        )
        return None
    if not lambdas:
        raise ValueError("choose_ease needs at least one lambda")
    gram = (matrix.T @ matrix).toarray().astype(np.float32)
    n_relevant = np.array([len(r) for r in valid_relevant], dtype=np.int64)
    best = ItemItem("ease", np.zeros((0, 0), np.float32), {"valid_ndcg@10": -1.0})
    for lam in lambdas:
        model = ItemItem("ease", fit_ease(gram, lam), {"lambda": lam})
        ranked = model.rank(matrix, valid_users, valid_exclude, 10)
        ndcg = metrics.ndcg_at(metrics.hits(ranked, list(valid_relevant)), n_relevant, 10)
        if ndcg > best.detail["valid_ndcg@10"]:
            best = ItemItem("ease", model.weights, {"lambda": lam, "valid_ndcg@10": ndcg})
    log.info(
        "   EASE: lambda %g chosen on the validation split (NDCG@10 %.4f)",
        best.detail["lambda"],
        best.detail["valid_ndcg@10"],
    )
    return best


def _top(scores: FloatArray, k: int) -> IntArray:
    """Column indices of the k best scores per row, best first; NaN (excluded) never."""
    order = metrics.top_k(scores, k)
    excluded = np.take_along_axis(np.isnan(scores), order, axis=1)
    return np.where(excluded, -1, order)
