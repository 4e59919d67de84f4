"""The feature tables a build writes (``features.npz``) and the graph reads: per-user and
per-item model inputs, their layout, and the id conventions both sides follow.

Index 0 of the id spaces is reserved for "unknown": user ``u`` is id ``u + 1``, and history
slots use 0 for padding, which lets the served user tower answer for a user it has never seen.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from contract.arrays import FloatArray, IntArray

#: Placeholder for a categorical value the source did not give.
UNKNOWN = "unknown"

AGE_EDGES = (18, 25, 35, 45, 50, 56)
HISTORY_LENGTH = 20


@dataclass(frozen=True)
class FeatureLayout:
    """Where the genre blocks sit inside the dense vectors (the rankers cross them)."""

    user_dim: int
    item_dim: int
    n_genres: int
    user_genre_start: int  # user_dense[start : start + n_genres] = genre affinity
    item_genre_start: int  # item_dense[start : start + n_genres] = genre multi-hot


@dataclass(frozen=True)
class FeatureTables:
    """Per-user and per-item model inputs, indexed by dense index (not the +1 id)."""

    user_dense: FloatArray  # (n_users, user_dim)
    item_dense: FloatArray  # (n_items, item_dim)
    history: IntArray  # (n_users, HISTORY_LENGTH) item ids (+1), most recent first, 0 = pad
    item_popularity: FloatArray  # (n_items,) positive interactions in train
    layout: FeatureLayout

    def save(self, path: Path) -> None:
        np.savez_compressed(
            path,
            user_dense=self.user_dense,
            item_dense=self.item_dense,
            history=self.history,
            item_popularity=self.item_popularity,
            layout=np.array(
                [
                    self.layout.user_dim,
                    self.layout.item_dim,
                    self.layout.n_genres,
                    self.layout.user_genre_start,
                    self.layout.item_genre_start,
                ]
            ),
        )


def load_features(path: Path) -> FeatureTables:
    """Read the tables :meth:`FeatureTables.save` wrote."""
    with np.load(path) as data:
        user_dim, item_dim, n_genres, user_start, item_start = (int(v) for v in data["layout"])
        return FeatureTables(
            user_dense=data["user_dense"],
            item_dense=data["item_dense"],
            history=data["history"],
            item_popularity=data["item_popularity"],
            layout=FeatureLayout(user_dim, item_dim, n_genres, user_start, item_start),
        )
