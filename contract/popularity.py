"""Popularity per demographic segment: the cold-start answer, the retrieval fallback and one
of retrieval's candidate sources.

Built the same way by the build (to train and evaluate on the candidates serving will
produce) and by the graph (from the catalog it loads): per group, the distinct users who have
seen each item, ties going to the globally more popular item so every group ranks the whole
catalogue. A group needs :data:`MIN_GROUP_USERS` users, else it falls back to a coarser one
(gender and age bucket, then age bucket, then gender, then everyone).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from contract.arrays import IntArray
from contract.features import AGE_EDGES, UNKNOWN

#: Smaller demographic groups give noisy popularity; they fall back to a coarser group.
MIN_GROUP_USERS = 20
MAX_AGE = 150

GroupKey = tuple[str, int]


def age_buckets(age: IntArray) -> IntArray:
    """Same buckets as the training features: 0 unknown, then one past each edge."""
    bucket = np.searchsorted(np.array(AGE_EDGES), age, side="right") + 1
    return np.where((age > 0) & (age <= MAX_AGE), bucket, 0).astype(np.int64)


def known_gender(value: str) -> bool:
    return bool(value.strip()) and value.strip().casefold() != UNKNOWN


@dataclass(frozen=True, eq=False)
class SegmentPopularity:
    """Every item ranked per segment; read-only arrays, shared by every request."""

    popular: IntArray  # every item, most popular first
    group: dict[GroupKey, IntArray] = field(default_factory=dict)  # (gender, age bucket)
    age: dict[int, IntArray] = field(default_factory=dict)
    gender: dict[str, IntArray] = field(default_factory=dict)

    @classmethod
    def build(
        cls,
        seen_indptr: IntArray,
        seen_indices: IntArray,
        popular: IntArray,
        ages: IntArray | None,
        genders: Sequence[str] | None,
    ) -> SegmentPopularity:
        """From each user's seen items (CSR over users), the global order ``popular`` and the
        users' ages (years, 0 unknown) and genders, either of which may be absent."""
        n_items = len(popular)
        counter = _GroupCounter(seen_indptr, seen_indices, n_items, popular)
        n_buckets = len(AGE_EDGES) + 2
        buckets = age_buckets(ages) if ages is not None else None
        names = sorted({g for g in genders or () if known_gender(g)})
        code_of = {g: i for i, g in enumerate(names)}
        gender_code = np.array([code_of.get(g, -1) for g in genders or ()], dtype=np.int64)
        group: dict[GroupKey, IntArray] = {}
        by_age: dict[int, IntArray] = {}
        by_gender: dict[str, IntArray] = {}
        if buckets is not None:
            by_age = counter.rank(np.where(buckets > 0, buckets, -1), n_buckets)
        if genders is not None:
            for code, ranking in counter.rank(gender_code, len(names)).items():
                by_gender[names[code]] = ranking
        if buckets is not None and genders is not None:
            known = (gender_code >= 0) & (buckets > 0)
            joint = np.where(known, gender_code * n_buckets + buckets, -1)
            for code, ranking in counter.rank(joint, len(names) * n_buckets).items():
                group[(names[code // n_buckets], code % n_buckets)] = ranking
        popular = np.asarray(popular, dtype=np.int64)
        popular.setflags(write=False)
        return cls(popular, group, by_age, by_gender)

    def ranking(self, gender: str | None, bucket: int | None) -> tuple[str, IntArray]:
        """The most specific segment's ranking and its name: ``gender+age``, ``age``,
        ``gender`` or ``global``."""
        if gender is not None and bucket is not None and (gender, bucket) in self.group:
            return "gender+age", self.group[(gender, bucket)]
        if bucket is not None and bucket in self.age:
            return "age", self.age[bucket]
        if gender is not None and gender in self.gender:
            return "gender", self.gender[gender]
        return "global", self.popular

    def gender_named(self, value: str | None) -> str | None:
        """The segments' spelling of a gender given in any case; None when no segment has it."""
        if not isinstance(value, str):
            return None
        wanted = value.strip().casefold()
        return next((g for g in self.gender if g.casefold() == wanted), None)


class _GroupCounter:
    """Counts, per group, the distinct users who have seen each item."""

    def __init__(
        self, indptr: IntArray, indices: IntArray, n_items: int, popular: IntArray
    ) -> None:
        users = np.repeat(np.arange(len(indptr) - 1, dtype=np.int64), np.diff(indptr))
        pairs = np.unique(users * n_items + indices)
        self._users, self._items = pairs // n_items, pairs % n_items
        self._n_items = n_items
        self._rank = np.empty(n_items, dtype=np.int64)
        self._rank[popular] = np.arange(n_items, dtype=np.int64)

    def rank(self, codes: IntArray, n_codes: int) -> dict[int, IntArray]:
        """Rankings of the groups (codes ``0..n_codes-1``, ``-1`` = none) with enough users."""
        sizes = np.bincount(codes[codes >= 0], minlength=n_codes)
        kept = np.flatnonzero(sizes >= MIN_GROUP_USERS)
        if len(kept) == 0:
            return {}
        user_code = codes[self._users]
        mask = user_code >= 0
        counts = np.bincount(
            user_code[mask] * self._n_items + self._items[mask], minlength=n_codes * self._n_items
        ).reshape(n_codes, self._n_items)[kept]
        tiebreak = np.broadcast_to(self._rank, counts.shape)
        order = np.lexsort((tiebreak, -counts), axis=-1).astype(np.int64)
        order.setflags(write=False)
        return {int(code): order[i] for i, code in enumerate(kept)}
