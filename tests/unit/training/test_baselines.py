"""EASE and item-kNN against what they must do: the closed form, the exclusions, the choice
of lambda on validation, and beating popularity where co-occurrence is the signal."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from scipy import sparse

from training import metrics
from training.baselines import (
    ItemItem,
    choose_ease,
    fit_ease,
    fit_item_knn,
    interaction_matrix,
)
from training.tables import Interactions


def _events(pairs: list[tuple[int, int]]) -> Interactions:
    user, item = (np.array(x, dtype=np.int64) for x in zip(*pairs, strict=True))
    return Interactions(
        user=user,
        item=item,
        rating=np.full(len(pairs), 5.0, dtype=np.float32),
        timestamp=np.arange(len(pairs), dtype=np.int64),
    )


def test_ease_weights_solve_the_constrained_least_squares() -> None:
    rng = np.random.default_rng(0)
    x = (rng.random((200, 12)) < 0.3).astype(np.float64)
    lam = 5.0
    b = fit_ease((x.T @ x).astype(np.float32), lam).astype(np.float64)
    assert np.allclose(np.diag(b), 0.0)
    # The zero-diagonal optimum: for each column j, the gradient of ||x - xB||^2 + lam||B||^2
    # vanishes at every off-diagonal entry.
    gradient = x.T @ (x @ b - x) + lam * b
    off = ~np.eye(12, dtype=bool)
    assert np.abs(gradient[off]).max() < 1e-3


def test_item_item_models_follow_co_occurrence_and_never_return_what_was_seen() -> None:
    # Items come in pairs (0,1), (2,3), ... that the same users take; item 9 is the most
    # popular on its own. A user who took 4 should get 5 first, not 9.
    pairs = [(u, 2 * (u % 4)) for u in range(40)] + [(u, 2 * (u % 4) + 1) for u in range(40)]
    pairs += [(u, 9) for u in range(40, 100)]
    pairs += [(100, 4)]
    matrix = interaction_matrix(_events(pairs), 101, 10)
    users = np.array([100])
    exclude = [np.array([4])]
    knn = ItemItem("item_knn", fit_item_knn(matrix, neighbours=3), {})
    ease = ItemItem("ease", fit_ease((matrix.T @ matrix).toarray(), 1.0), {})
    for model in (knn, ease):
        ranked = model.rank(matrix, users, exclude, 5)
        assert ranked[0, 0] == 5, (model.name, ranked)
        assert 4 not in ranked[0]


def test_item_knn_keeps_only_the_nearest_neighbours() -> None:
    rng = np.random.default_rng(1)
    matrix = sparse.csr_matrix((rng.random((300, 40)) < 0.2).astype(np.float32))
    top = fit_item_knn(matrix, neighbours=5)
    assert np.diff(top.indptr).max() <= 5
    assert top.diagonal().sum() == 0


def test_lambda_is_the_one_that_ranks_validation_best() -> None:
    rng = np.random.default_rng(2)
    n_users, n_items = 300, 30
    groups = rng.integers(0, 3, size=n_users)  # each user likes one block of ten items
    noise = [(u, int(i)) for u in range(n_users) for i in rng.choice(n_items, 3, False)]
    pairs = [(u, int(g * 10 + i)) for u, g in enumerate(groups) for i in rng.choice(10, 3, False)]
    matrix = interaction_matrix(_events(pairs + noise), n_users, n_items)
    users = np.arange(n_users)
    seen = [matrix[u].indices.astype(np.int64) for u in users]
    blocks = [np.arange(g * 10, g * 10 + 10) for g in groups]
    relevant = [np.setdiff1d(b, s) for b, s in zip(blocks, seen, strict=True)]
    lambdas = (0.01, 3.0, 30.0, 300.0)
    chosen = choose_ease(matrix, users, relevant, seen, lambdas=lambdas)
    assert chosen is not None
    n_relevant = np.array([len(r) for r in relevant])

    def ndcg(lam: float) -> float:
        model = ItemItem("ease", fit_ease((matrix.T @ matrix).toarray(), lam), {})
        hit = metrics.hits(model.rank(matrix, users, seen, 10), relevant)
        return metrics.ndcg_at(hit, n_relevant, 10)

    scores = {lam: ndcg(lam) for lam in lambdas}
    assert len(set(np.round(list(scores.values()), 6))) > 1  # the choice matters here
    assert chosen.detail["lambda"] == max(scores, key=lambda lam: scores[lam])
    assert abs(chosen.detail["valid_ndcg@10"] - max(scores.values())) < 1e-9


def test_candidate_scores_refit_and_the_served_form_agree(tmp_path: Path) -> None:
    from inference.graph.item_item import ItemItemScores

    rng = np.random.default_rng(3)
    drawn = zip(rng.integers(0, 50, 400), rng.integers(0, 20, 400), strict=True)
    pairs = [(int(u), int(i)) for u, i in drawn]
    matrix = interaction_matrix(_events(pairs), 50, 20)
    model = ItemItem("ease", fit_ease((matrix.T @ matrix).toarray(), 10.0), {"lambda": 10.0})
    users = np.array([3, 7])
    items = np.array([[0, 5, -1], [19, 2, 4]])
    got = model.candidate_scores(matrix, users, items)
    full = model.scores(matrix, users)
    assert np.isnan(got[0, 2])
    np.testing.assert_allclose(got[1], full[1, [19, 2, 4]], rtol=1e-6)
    more = interaction_matrix(_events([*pairs, (3, 11)]), 50, 20)
    refit = model.refit(more)
    assert refit.detail["lambda"] == 10.0
    assert not np.allclose(np.asarray(refit.weights), np.asarray(model.weights))
    refit.save(tmp_path / "item_item.npz")
    served = ItemItemScores.load(tmp_path)
    assert served is not None
    seen = more[3].indices.astype(np.int64)
    np.testing.assert_allclose(
        served.scores(seen, np.arange(20)), refit.scores(more, np.array([3]))[0], rtol=1e-5
    )
