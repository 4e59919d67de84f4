"""The build's merged candidates (as the graph merges them) and the rankers' negatives
drawn from them."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, cast

import numpy as np
from scipy import sparse

from contract.arrays import FloatArray, IntArray
from contract.candidates import ITEM_ITEM, POPULAR, SOURCES, TWO_TOWER
from contract.features import FeatureTables
from contract.popularity import SegmentPopularity
from training.baselines import ItemItem, fit_ease
from training.candidates import Sources
from training.ranking import labelled_pairs, sample_from_pools
from training.retrieval import ItemIndex, RetrievalModel
from training.tables import Interactions

N_USERS, N_ITEMS, DIM = 40, 60, 4


@dataclass
class _Towers:
    """The part of a retrieval model the sources use: fixed user and item embeddings."""

    users: FloatArray
    item_embeddings: FloatArray

    def user_embeddings(self, features: FeatureTables, users: IntArray) -> FloatArray:
        return self.users[users]


def _sources() -> Sources:
    rng = np.random.default_rng(0)
    items = rng.normal(size=(N_ITEMS, DIM)).astype(np.float32)
    items /= np.linalg.norm(items, axis=1, keepdims=True)
    users = rng.normal(size=(N_USERS, DIM)).astype(np.float32)
    matrix = sparse.csr_matrix((rng.random((N_USERS, N_ITEMS)) < 0.15).astype(np.float32))
    item_item = ItemItem("ease", fit_ease((matrix.T @ matrix).toarray(), 10.0), {"lambda": 10.0})
    popular = np.argsort(-np.asarray(matrix.sum(axis=0)).ravel(), kind="stable").astype(np.int64)
    return Sources(
        retrieval=cast(RetrievalModel, _Towers(users, items)),
        index=ItemIndex(items, exact=True),
        features=cast(Any, None),
        item_item=item_item,
        matrix=matrix,
        segments=SegmentPopularity(popular),
        segment_of=[popular] * N_USERS,
    )


def test_gathered_candidates_merge_all_sources_and_skip_what_was_seen() -> None:
    sources = _sources()
    users = np.arange(N_USERS, dtype=np.int64)
    seen = [sources.matrix[u].indices.astype(np.int64) for u in users]
    found = sources.gather(users, seen, depth=30)
    assert found.items.shape == (N_USERS, 30)
    for row, _user in enumerate(users):
        got = found.items[row][found.items[row] >= 0]
        assert len(set(got.tolist())) == len(got)
        assert not np.isin(got, seen[row]).any()
    assert found.share(TWO_TOWER) > 0.8
    assert found.share(ITEM_ITEM) > 0
    assert found.share(POPULAR) > 0
    assert (found.masks[found.items >= 0] > 0).all()
    assert (found.masks[found.items >= 0] < 1 << len(SOURCES)).all()
    # Every candidate carries the towers' score and the item-item score, whoever found it.
    towers = cast(_Towers, sources.retrieval)
    expected = np.einsum("nd,ncd->nc", towers.users, towers.item_embeddings[found.items])
    np.testing.assert_allclose(found.scores, expected, rtol=1e-5)
    np.testing.assert_allclose(
        found.item_item, sources.item_item.candidate_scores(sources.matrix, users, found.items)
    )


def test_negatives_from_pools_come_from_each_users_own_pool() -> None:
    pools = {0: np.array([5, 6, -1]), 1: np.array([7, -1, -1]), 2: np.array([-1, -1, -1])}

    def gather(users: IntArray) -> IntArray:
        return np.stack([pools[int(u)] for u in users])

    rng = np.random.default_rng(0)
    users = np.array([0, 1, 2, 0, 1, 0] * 50, dtype=np.int64)
    drawn = sample_from_pools(users, gather, rng, block=2)
    assert set(drawn[users == 0].tolist()) == {5, 6}
    assert set(drawn[users == 1].tolist()) == {7}
    assert (drawn[users == 2] == -1).all()  # an empty pool gives nothing


def test_labelled_pairs_split_negatives_between_pools_and_the_catalogue() -> None:
    part = Interactions(
        user=np.zeros(10, dtype=np.int64),
        item=np.arange(10, dtype=np.int64),
        rating=np.full(10, 5.0, dtype=np.float32),
        timestamp=np.arange(10, dtype=np.int64),
    )
    pool = np.array([[50, 51]])
    pairs = labelled_pairs(
        part,
        part,
        1000,
        np.random.default_rng(0),
        4,
        pools=lambda users: np.repeat(pool, len(users), axis=0),
        pool_share=0.5,
    )
    negatives = pairs.item[~pairs.label]
    assert len(negatives) == 40
    assert np.isin(negatives, [50, 51]).sum() >= 20  # half from the pool (uniform ones may hit)
    assert not np.isin(negatives, part.item).any()
