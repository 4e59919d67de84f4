"""Segment popularity: counts distinct users per group, falls back to coarser groups."""

from __future__ import annotations

import numpy as np

from contract.popularity import MIN_GROUP_USERS, SegmentPopularity, age_buckets


def _csr(rows: list[list[int]]) -> tuple[np.ndarray, np.ndarray]:
    indptr = np.cumsum([0, *(len(r) for r in rows)]).astype(np.int64)
    return indptr, np.array([i for r in rows for i in r], dtype=np.int64)


def test_groups_rank_by_their_own_users_and_small_groups_fall_back() -> None:
    n = MIN_GROUP_USERS
    # n women aged 30 all saw item 2; n men aged 30 all saw item 1; 3 women aged 60 saw 0.
    rows = [[2]] * n + [[1]] * n + [[0]] * 3
    ages = np.array([30] * (2 * n) + [60] * 3, dtype=np.int64)
    genders = ["F"] * n + ["M"] * n + ["F"] * 3
    indptr, indices = _csr(rows)
    popular = np.array([1, 2, 0], dtype=np.int64)
    segments = SegmentPopularity.build(indptr, indices, popular, ages, genders)
    bucket_30 = int(age_buckets(np.array([30]))[0])
    bucket_60 = int(age_buckets(np.array([60]))[0])
    assert segments.ranking("F", bucket_30)[0] == "gender+age"
    assert segments.ranking("F", bucket_30)[1][0] == 2
    assert segments.ranking("M", bucket_30)[1][0] == 1
    source, ranking = segments.ranking("F", bucket_60)  # 3 users: too few for any age group
    assert source == "gender"
    assert ranking[0] == 2
    assert segments.ranking(None, None) == ("global", segments.popular)
    assert segments.gender_named(" f ") == "F"
    assert segments.gender_named("x") is None
