"""Dense user and item features, computed from the training split only.

The same tables feed training, offline evaluation and (through ``features.npz`` in the build)
the online feature store, so a model sees identical features offline and online. Index 0 of
the id spaces is reserved for "unknown": user ``u`` is id ``u + 1``, and history slots use 0
for padding, which lets the served user tower answer for a user it has never seen.
"""

from __future__ import annotations

import numpy as np

from contract.arrays import FloatArray, IntArray
from contract.features import AGE_EDGES, HISTORY_LENGTH, FeatureLayout, FeatureTables
from training.split import POSITIVE_RATING
from training.tables import Dataset, Interactions


def _one_hot(codes: IntArray, width: int) -> FloatArray:
    out = np.zeros((len(codes), width), dtype=np.float32)
    out[np.arange(len(codes)), codes] = 1.0
    return out


def recent_history(train: Interactions, n_users: int, length: int = HISTORY_LENGTH) -> IntArray:
    """Each user's last ``length`` positive items (as ids, +1), most recent first."""
    pos = train.take(train.rating >= POSITIVE_RATING)
    order = np.lexsort((-pos.timestamp, pos.user))  # by user, newest first
    users, items = pos.user[order], pos.item[order]
    starts = np.searchsorted(users, np.arange(n_users))
    rank = np.arange(len(users)) - starts[users]
    keep = rank < length
    history = np.zeros((n_users, length), dtype=np.int64)
    history[users[keep], rank[keep]] = items[keep] + 1
    return history


def build_features(dataset: Dataset, train: Interactions) -> FeatureTables:
    users, items = dataset.users, dataset.items
    n_users, n_items = len(users), len(items)
    genres = items.genres.astype(np.float32)
    n_genres = genres.shape[1]
    positive = train.rating >= POSITIVE_RATING

    # Users: demographics, then taste (genre affinity of positives), then activity.
    bucket = np.searchsorted(np.array(AGE_EDGES), users.age, side="right")
    bucket = np.where(users.age > 0, bucket + 1, 0)  # 0 = unknown age
    affinity = np.zeros((n_users, n_genres), dtype=np.float32)
    np.add.at(affinity, train.user[positive], genres[train.item[positive]])
    n_pos = np.bincount(train.user[positive], minlength=n_users).astype(np.float32)
    affinity /= np.maximum(n_pos, 1.0)[:, None]
    n_all = np.bincount(train.user, minlength=n_users).astype(np.float32)
    rating_sum = np.bincount(train.user, weights=train.rating, minlength=n_users)
    mean_rating = np.where(n_all > 0, rating_sum / np.maximum(n_all, 1), 3.5) - 3.5
    demographics = [
        (users.age / 100.0).astype(np.float32)[:, None],
        _one_hot(bucket, len(AGE_EDGES) + 2),
        _one_hot(users.gender, len(users.gender_vocab)),
        _one_hot(users.occupation, len(users.occupation_vocab)),
    ]
    user_genre_start = sum(block.shape[1] for block in demographics)
    activity = np.stack([np.log1p(n_all) / 5.0, mean_rating.astype(np.float32)], axis=1)
    user_dense = np.concatenate([*demographics, affinity, activity], axis=1).astype(np.float32)

    # Items: genres, then release year, then popularity and quality in train.
    popularity = np.bincount(train.item[positive], minlength=n_items).astype(np.float32)
    count = np.bincount(train.item, minlength=n_items).astype(np.float32)
    item_rating = np.bincount(train.item, weights=train.rating, minlength=n_items)
    shrunk = (item_rating + 3.5 * 5) / (count + 5) - 3.5  # Bayesian mean, 5 pseudo-ratings
    known_year = items.year > 0
    year = np.where(known_year, (items.year - 1990) / 20.0, 0.0)
    item_dense = np.concatenate(
        [
            genres,
            np.stack(
                [
                    year,
                    (~known_year).astype(np.float32),
                    np.log1p(popularity) / np.log1p(max(popularity.max(), 1.0)),
                    np.log1p(count) / 5.0,
                    shrunk,
                ],
                axis=1,
            ),
        ],
        axis=1,
    ).astype(np.float32)
    return FeatureTables(
        user_dense=user_dense,
        item_dense=item_dense,
        history=recent_history(train, n_users),
        item_popularity=popularity,
        layout=FeatureLayout(
            user_dim=user_dense.shape[1],
            item_dim=item_dense.shape[1],
            n_genres=n_genres,
            user_genre_start=user_genre_start,
            item_genre_start=0,
        ),
    )
