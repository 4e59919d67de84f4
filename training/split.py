"""Time-ordered train/validation/test split with implicit-feedback labels.

Each user's interactions are ordered by time; the earliest go to train, the next to validation
(used for the INT8 gate and to fit the combiner) and the latest to test. Nothing a model sees in
training happens after anything it is evaluated on, for the same user.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from contract.arrays import BoolArray, IntArray
from training.tables import Interactions

#: Ratings at or above this are positives (MovieLens: 4 and 5 stars).
POSITIVE_RATING = 4.0


@dataclass(frozen=True)
class Split:
    train: Interactions
    valid: Interactions
    test: Interactions


def time_ordered_split(
    interactions: Interactions,
    *,
    valid_fraction: float = 0.1,
    test_fraction: float = 0.1,
    min_interactions: int = 3,
) -> Split:
    """Split each user's history by time.

    Users with fewer than ``min_interactions`` events stay entirely in train (there is nothing to
    hold out). Otherwise at least one event goes to each held-out part. Ties in timestamp keep
    source order, so the split is deterministic.
    """
    if not 0 <= valid_fraction < 1 or not 0 < test_fraction < 1:
        raise ValueError("valid_fraction and test_fraction must be in [0, 1) and (0, 1)")
    order = np.lexsort((np.arange(len(interactions)), interactions.timestamp, interactions.user))
    users = interactions.user[order]
    starts = np.flatnonzero(np.r_[True, users[1:] != users[:-1]])
    counts = np.diff(np.r_[starts, len(users)])
    position = np.arange(len(users)) - np.repeat(starts, counts)
    n = np.repeat(counts, counts)
    eligible = n >= min_interactions
    n_test = np.where(eligible, np.maximum(1, np.floor(n * test_fraction)), 0).astype(np.int64)
    want_valid = np.maximum(1, np.floor(n * valid_fraction)) if valid_fraction > 0 else 0
    n_valid = np.where(eligible, want_valid, 0).astype(np.int64)
    part = np.zeros(len(users), dtype=np.int8)  # 0 train, 1 valid, 2 test
    part[position >= n - n_test - n_valid] = 1
    part[position >= n - n_test] = 2
    return Split(
        train=interactions.take(order[part == 0]),
        valid=interactions.take(order[part == 1]),
        test=interactions.take(order[part == 2]),
    )


#: The fewest of each kind a build needs: a model trains on positives, the combiner and the
#: INT8 gate learn and judge on validation positives, the report is read on test positives.
MIN_EVENTS = {"train positives": 1, "validation positives": 1, "test positives": 1}


def shortfalls(split: Split, *, min_interactions: int = 3) -> list[str]:
    """What the split lacks for a build, one phrase each (empty: enough)."""
    counts = {
        "train positives": len(positives(split.train)),
        "validation positives": len(positives(split.valid)),
        "test positives": len(positives(split.test)),
    }
    out = []
    if len(split.valid) == 0 and len(split.test) == 0:
        out.append(f"no user has the {min_interactions} events a time-ordered hold-out needs")
    for what, least in MIN_EVENTS.items():
        if counts[what] < least:
            out.append(f"{counts[what]} {what} (ratings >= {POSITIVE_RATING:g}; need >= {least})")
    return out


def positives(interactions: Interactions, threshold: float = POSITIVE_RATING) -> Interactions:
    return interactions.take(interactions.rating >= threshold)


def pair_keys(user: IntArray, item: IntArray, n_items: int) -> IntArray:
    return user * np.int64(n_items) + item


def sample_negatives(
    users: IntArray,
    seen: Interactions,
    n_items: int,
    rng: np.random.Generator,
    *,
    max_rounds: int = 20,
) -> IntArray:
    """One uniformly random item per entry of ``users`` that the user has not interacted with.

    Rejection sampling against the sorted set of seen pairs, which is fast when users have seen
    a small part of the catalogue; entries still clashing after ``max_rounds`` draw exactly from
    their user's unseen items. A user who has seen everything gets a random item.
    """
    seen_keys = np.unique(pair_keys(seen.user, seen.item, n_items))
    items = rng.integers(0, n_items, size=len(users), dtype=np.int64)
    clash = np.ones(len(users), dtype=np.bool_)
    for _ in range(max_rounds):
        clash = _contains(seen_keys, pair_keys(users, items, n_items))
        if not clash.any():
            return items
        items[clash] = rng.integers(0, n_items, size=int(clash.sum()), dtype=np.int64)
    clash = _contains(seen_keys, pair_keys(users, items, n_items))
    catalogue = np.arange(n_items, dtype=np.int64)
    for row in np.flatnonzero(clash):
        lo, hi = np.searchsorted(seen_keys, [users[row] * n_items, (users[row] + 1) * n_items])
        unseen = np.setdiff1d(catalogue, seen_keys[lo:hi] - users[row] * n_items)
        if len(unseen):
            items[row] = rng.choice(unseen)
    return items


def _contains(sorted_keys: IntArray, keys: IntArray) -> BoolArray:
    if len(sorted_keys) == 0:
        return np.zeros(len(keys), dtype=np.bool_)
    at = np.minimum(np.searchsorted(sorted_keys, keys), len(sorted_keys) - 1)
    return np.asarray(sorted_keys[at] == keys)


def seen_by_user(interactions: Interactions, n_users: int) -> list[IntArray]:
    """Per user, the sorted distinct items they interacted with."""
    order = np.lexsort((interactions.item, interactions.user))
    users = interactions.user[order]
    items = interactions.item[order]
    bounds = np.searchsorted(users, np.arange(n_users + 1))
    return [np.unique(items[bounds[u] : bounds[u + 1]]) for u in range(n_users)]
