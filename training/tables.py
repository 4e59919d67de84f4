"""Typed, column-oriented tables of users, items and interactions.

Columns are numpy arrays so the factory scales to the synthetic generator's sizes without a
dataframe library. Raw ids (strings, as they appear in the source) are mapped to dense indices
``0..n-1`` once, here; every model and artifact downstream speaks indices, and the id lists are
kept so serving can translate back.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from contract.arrays import BoolArray, FloatArray, IntArray
from contract.features import UNKNOWN


@dataclass(frozen=True)
class Users:
    """One row per user. Categorical columns are codes into their vocabularies."""

    ids: list[str]
    age: IntArray  # years; 0 when unknown
    gender: IntArray  # codes into gender_vocab
    occupation: IntArray  # codes into occupation_vocab
    zip_code: list[str]
    gender_vocab: list[str] = field(default_factory=lambda: [UNKNOWN])
    occupation_vocab: list[str] = field(default_factory=lambda: [UNKNOWN])

    def __len__(self) -> int:
        return len(self.ids)


@dataclass(frozen=True)
class Items:
    """One row per item. ``genres`` is a multi-hot matrix over ``genre_vocab``."""

    ids: list[str]
    title: list[str]
    year: IntArray  # release year; 0 when unknown
    genres: BoolArray  # shape (n_items, len(genre_vocab))
    genre_vocab: list[str]

    def __len__(self) -> int:
        return len(self.ids)


@dataclass(frozen=True)
class Interactions:
    """One row per (user, item) event, in source order. Indices point into Users/Items."""

    user: IntArray
    item: IntArray
    rating: FloatArray
    timestamp: IntArray

    def __len__(self) -> int:
        return int(self.user.shape[0])

    def take(self, rows: IntArray | BoolArray) -> Interactions:
        """The subset of rows selected by an index array or boolean mask."""
        return Interactions(
            user=self.user[rows],
            item=self.item[rows],
            rating=self.rating[rows],
            timestamp=self.timestamp[rows],
        )


@dataclass(frozen=True)
class Dataset:
    """A complete, consistent dataset plus a fingerprint of the bytes it was read from."""

    name: str
    users: Users
    items: Items
    interactions: Interactions
    sha256: str  # of the source files (or of the generator's parameters)

    def summary(self) -> str:
        return (
            f"{self.name}: {len(self.users):,} users, {len(self.items):,} items, "
            f"{len(self.interactions):,} interactions"
        )
