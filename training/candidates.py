"""The build's retrieval: the candidate sources merged as the graph merges them
(:mod:`contract.candidates`), for whole sets of users at once.

The combiner is fit and the pipeline evaluated on these merged lists, and the rankers draw
negatives from them, so training sees the candidates serving will produce.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from scipy import sparse

from contract.arrays import FloatArray, IntArray
from contract.candidates import ITEM_ITEM, POPULAR, SOURCES, TWO_TOWER, merge, proposals
from contract.features import FeatureTables
from contract.popularity import SegmentPopularity, age_buckets, known_gender
from training.baselines import ItemItem
from training.retrieval import ItemIndex, RetrievalModel
from training.tables import Users


@dataclass(frozen=True)
class Found:
    """Merged candidates for a set of users, -1 padded, with their sources and each source's
    score: the towers' inner product and the item-item score, for every candidate whichever
    source found it (NaN where padded)."""

    users: IntArray
    items: IntArray  # (users, depth)
    masks: IntArray  # (users, depth) source bits, as contract.candidates.SOURCES
    scores: FloatArray  # (users, depth) two-tower inner products
    item_item: FloatArray  # (users, depth) item-item scores

    def found_by(self, source: str) -> IntArray:
        """The candidates ``source`` proposed (others -1), in merged order."""
        bit = 1 << SOURCES.index(source)
        return np.where((self.masks & bit) > 0, self.items, -1)

    def share(self, source: str) -> float:
        """The fraction of the candidates ``source`` proposed (alone or with another)."""
        return float((self.found_by(source) >= 0).sum() / max((self.items >= 0).sum(), 1))


@dataclass(frozen=True)
class Sources:
    """What the three sources need: the towers and their index, the item-item model and the
    users x items matrix it scores from, and the segments' popularity."""

    retrieval: RetrievalModel
    index: ItemIndex
    features: FeatureTables
    item_item: ItemItem
    matrix: sparse.csr_matrix
    segments: SegmentPopularity
    segment_of: list[IntArray]  # per user, their segment's ranking

    @classmethod
    def build(
        cls,
        retrieval: RetrievalModel,
        index: ItemIndex,
        features: FeatureTables,
        item_item: ItemItem,
        matrix: sparse.csr_matrix,
        users: Users,
    ) -> Sources:
        """Sources over ``matrix``, the users x items interactions the models were fit on
        (:func:`~training.baselines.interaction_matrix`)."""
        seen = matrix.copy()
        seen.sort_indices()
        popular = np.argsort(-features.item_popularity, kind="stable").astype(np.int64)
        genders = [users.gender_vocab[c] for c in users.gender]
        segments = SegmentPopularity.build(
            seen.indptr.astype(np.int64), seen.indices.astype(np.int64), popular, users.age, genders
        )
        buckets = age_buckets(users.age)
        segment_of = [
            segments.ranking(
                segments.gender_named(g) if known_gender(g) else None,
                int(b) if b > 0 else None,
            )[1]
            for g, b in zip(genders, buckets, strict=True)
        ]
        return cls(retrieval, index, features, item_item, matrix, segments, segment_of)

    def gather(self, users: IntArray, exclude: Sequence[IntArray], depth: int) -> Found:
        """Each user's merged candidates, never an item in their ``exclude``."""
        room = proposals(depth)
        user_emb = self.retrieval.user_embeddings(self.features, users)
        towers = self.index.search(user_emb, depth, list(exclude))
        collaborative = self.item_item.rank(self.matrix, users, exclude, room)
        # As served: an item nothing in the user's history links to is not proposed.
        linked = self.item_item.candidate_scores(self.matrix, users, collaborative) > 0
        collaborative = np.where(linked, collaborative, -1)
        popular = self.segment_popular(users, exclude, room)
        items = np.full((len(users), depth), -1, dtype=np.int64)
        masks = np.zeros((len(users), depth), dtype=np.int64)
        for row in range(len(users)):
            merged, bits = merge(
                {TWO_TOWER: towers[row], ITEM_ITEM: collaborative[row], POPULAR: popular[row]},
                depth,
            )
            items[row, : len(merged)] = merged
            masks[row, : len(bits)] = bits
        embeddings = self.retrieval.item_embeddings[np.maximum(items, 0)]
        scores = np.einsum("nd,ncd->nc", user_emb, embeddings)
        scores = np.where(items >= 0, scores, np.nan).astype(np.float32)
        item_item = self.item_item.candidate_scores(self.matrix, users, items)
        return Found(users, items, masks, scores, item_item)

    def segment_popular(self, users: IntArray, exclude: Sequence[IntArray], n: int) -> IntArray:
        """Each user's segment's ``n`` most popular items not in their ``exclude``, -1 padded
        (as the graph's ``Catalog.popular_for``)."""
        out = np.full((len(users), n), -1, dtype=np.int64)
        for row, user in enumerate(users):
            head = self.segment_of[int(user)][: n + len(exclude[row])]
            kept = head[~np.isin(head, exclude[row])][:n]
            out[row, : len(kept)] = kept
        return out
