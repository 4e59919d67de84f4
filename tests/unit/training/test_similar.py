"""Similar items offline: the queries, the neighbours, and the rule beating plain cosine
where the next item is a popular neighbour."""

from __future__ import annotations

import numpy as np
from scipy import sparse

from training.similar import (
    fit_neighbours,
    next_item_queries,
    popular_similar,
    rank_similar,
    similar_metrics,
)
from training.tables import Interactions


def _events(rows: list[tuple[int, int, float, int]]) -> Interactions:
    user, item, rating, ts = zip(*rows, strict=True)
    return Interactions(
        user=np.array(user, dtype=np.int64),
        item=np.array(item, dtype=np.int64),
        rating=np.array(rating, dtype=np.float32),
        timestamp=np.array(ts, dtype=np.int64),
    )


def test_queries_take_the_latest_liked_item_and_what_was_liked_next() -> None:
    history = _events([(0, 1, 5, 1), (0, 2, 5, 3), (0, 3, 2, 4), (1, 4, 2, 1)])
    target = _events([(0, 7, 5, 9), (0, 6, 4, 8), (0, 5, 1, 10), (1, 8, 5, 5)])
    queries = next_item_queries(history, target, n_users=3)
    assert queries.items.tolist() == [2]  # user 1 liked nothing before: no query
    assert queries.relevant[0].tolist() == [6, 7]  # liked, in time order; 5 was disliked
    assert queries.exclude[0].tolist() == [1, 2, 3]


def test_neighbours_keep_the_best_and_weigh_by_asymmetric_cosine() -> None:
    # Item 0 co-occurs with item 1 (popular) twice and with item 2 (rare) once.
    rows = [[0, 1], [0, 1], [0, 2], [1], [1], [1]]
    matrix = sparse.csr_matrix(
        (
            [1.0] * sum(map(len, rows)),
            ([u for u, r in enumerate(rows) for _ in r], [i for r in rows for i in r]),
        ),
        shape=(len(rows), 3),
    )
    cosine = fit_neighbours(matrix, 0.5).toarray()
    assert np.isclose(cosine[0, 1], 2 / np.sqrt(3 * 5))
    assert np.isclose(cosine[0, 2], 1 / np.sqrt(3 * 1))
    assert cosine[0, 2] > cosine[0, 1]  # plain cosine favours the rare neighbour
    leaning = fit_neighbours(matrix, 0.9).toarray()
    assert leaning[0, 1] > leaning[0, 2]  # alpha near 1 favours the one consumed more
    assert (np.diag(leaning) == 0).all()
    assert (fit_neighbours(matrix, 0.5, neighbours=1).getnnz(axis=1) <= 1).all()


def test_rank_similar_never_returns_the_query_or_excluded_items() -> None:
    rng = np.random.default_rng(0)
    matrix = sparse.csr_matrix((rng.random((300, 40)) < 0.2).astype(np.float32))
    embeddings = rng.normal(size=(40, 8)).astype(np.float32)
    embeddings /= np.linalg.norm(embeddings, axis=1, keepdims=True)
    history = _events(
        [(u, int(i), 5, t) for t, (u, i) in enumerate(zip(*matrix.nonzero(), strict=True))]
    )
    target = _events([(u, (u * 7) % 40, 5, 10**6 + u) for u in range(300)])
    queries = next_item_queries(history, target, 300)
    for neighbours, emb in ((fit_neighbours(matrix, 0.7), embeddings), (None, embeddings)):
        ranked = rank_similar(queries, neighbours, emb, k=10)
        for row, item in enumerate(queries.items):
            got = ranked[row][ranked[row] >= 0]
            assert item not in got
            assert not np.isin(got, queries.exclude[row]).any()
    popular = popular_similar(queries, np.arange(40, dtype=np.float32))
    assert popular.shape == (len(queries.items), 10)


def test_neighbours_find_the_item_consumed_next_better_than_popularity() -> None:
    # Pairs (2j, 2j+1): whoever liked one likes its partner next.
    rng = np.random.default_rng(1)
    history_rows, target_rows = [], []
    for user in range(400):
        pair = int(rng.integers(0, 20))
        filler = int(rng.integers(40, 60))
        history_rows += [(user, filler, 5, 0), (user, 2 * pair, 5, 1)]
        target_rows.append((user, 2 * pair + 1, 5, 2))
    history = _events(history_rows)
    # Half the users also saw the partner earlier, so co-occurrence knows the pairs.
    for user in range(0, 400, 2):
        item = int(history.item[2 * user + 1]) + 1
        history_rows.append((user + 1000, item - 1, 5, 0))
        history_rows.append((user + 1000, item, 5, 0))
    history = _events(history_rows)
    matrix = sparse.csr_matrix(
        (np.ones(len(history)), (history.user, history.item)), shape=(1400, 60)
    )
    matrix.data[:] = 1
    queries = next_item_queries(history, _events(target_rows), 1400)
    served = similar_metrics(rank_similar(queries, fit_neighbours(matrix, 0.7), None), queries)
    popular = similar_metrics(
        popular_similar(queries, np.asarray(matrix.sum(axis=0)).ravel().astype(np.float32)),
        queries,
    )
    assert served["hit_rate@10"] > 0.9
    assert served["ndcg@10"] > popular["ndcg@10"] + 0.3
