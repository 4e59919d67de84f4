"""The time-ordered split leaks nothing from a user's future into training."""

from __future__ import annotations

import numpy as np
import pytest

from training.split import sample_negatives, seen_by_user, time_ordered_split
from training.synthetic import SyntheticConfig, generate
from training.tables import Interactions


@pytest.fixture(scope="module")
def interactions() -> Interactions:
    return generate(SyntheticConfig(n_users=300, n_items=200, seed=3)).interactions


def by_user(part: Interactions, n: int) -> list[np.ndarray]:
    return [part.timestamp[part.user == u] for u in range(n)]


def test_no_user_trains_on_its_future(interactions: Interactions) -> None:
    split = time_ordered_split(interactions)
    train, valid, test = (by_user(p, 300) for p in (split.train, split.valid, split.test))
    for u in range(300):
        if len(valid[u]):
            assert train[u].max(initial=-1) <= valid[u].min()
        if len(test[u]):
            assert max(train[u].max(initial=-1), valid[u].max(initial=-1)) <= test[u].min()


def test_split_is_a_partition(interactions: Interactions) -> None:
    split = time_ordered_split(interactions)
    parts = [split.train, split.valid, split.test]
    assert sum(len(p) for p in parts) == len(interactions)
    keys = np.concatenate([p.user * 10_000 + p.item for p in parts])
    assert len(np.unique(keys)) == len(keys)


def test_fractions_and_small_users() -> None:
    user = np.array([0] * 10 + [1] * 2, dtype=np.int64)
    ts = np.arange(12, dtype=np.int64)[::-1].copy()  # reverse order in the source
    inter = Interactions(user, np.arange(12, dtype=np.int64), np.ones(12, np.float32), ts)
    split = time_ordered_split(inter, valid_fraction=0.2, test_fraction=0.2)
    assert sorted(split.test.timestamp.tolist()) == [10, 11]  # user 0's latest two
    assert sorted(split.valid.timestamp.tolist()) == [8, 9]
    assert set(split.train.user[split.train.timestamp < 2].tolist()) == {1}  # too few to hold out


def test_split_is_deterministic_with_ties() -> None:
    user = np.zeros(6, dtype=np.int64)
    inter = Interactions(user, np.arange(6, dtype=np.int64), np.ones(6, np.float32), user.copy())
    first = time_ordered_split(inter)
    again = time_ordered_split(inter)
    assert first.test.item.tolist() == again.test.item.tolist() == [5]


def test_sampled_negatives_are_unseen(interactions: Interactions) -> None:
    rng = np.random.default_rng(0)
    users = rng.integers(0, 300, size=5000)
    items = sample_negatives(users, interactions, 200, rng)
    seen = seen_by_user(interactions, 300)
    clashes = {u for u, i in zip(users, items, strict=True) if np.isin(i, seen[u])}
    # Only a user who has seen the whole catalogue can get a seen item.
    assert all(len(seen[u]) == 200 for u in clashes)
    assert len(np.unique(items)) > 150  # uniform over the catalogue, not stuck on a few items


def test_shortfalls_name_what_a_build_lacks() -> None:
    from training.split import shortfalls

    few = Interactions(
        user=np.array([0, 0, 1], dtype=np.int64),
        item=np.array([0, 1, 2], dtype=np.int64),
        rating=np.array([5.0, 3.0, 5.0], dtype=np.float32),
        timestamp=np.array([1, 2, 3], dtype=np.int64),
    )
    problems = shortfalls(time_ordered_split(few))
    assert problems[0] == "no user has the 3 events a time-ordered hold-out needs"
    assert any(p.startswith("0 validation positives") for p in problems)
    assert any(p.startswith("0 test positives") for p in problems)
    enough = Interactions(
        user=np.zeros(10, dtype=np.int64),
        item=np.arange(10, dtype=np.int64),
        rating=np.full(10, 5.0, dtype=np.float32),
        timestamp=np.arange(10, dtype=np.int64),
    )
    assert shortfalls(time_ordered_split(enough)) == []
