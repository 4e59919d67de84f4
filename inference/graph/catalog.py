"""The catalog the graph serves from: ids, feature tables, genres, what each user has seen and
popularity lists, read once from the user tower's version directory.

Everything a request needs is precomputed at load (popularity per demographic group included),
so the request path only indexes arrays. Files newer builds add (``catalog.json``,
``seen.npz``) are optional: an older build still serves, with generic genre names, no titles,
global popularity only and the recent-history table standing in for the seen set.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from contract.arrays import BoolArray, FloatArray, IntArray
from contract.features import FeatureTables, load_features
from contract.names import CATALOG_FILE, FEATURES_FILE, IDS_FILE, SEEN_FILE
from contract.popularity import MIN_GROUP_USERS, SegmentPopularity, age_buckets
from inference.graph.types import ScoredItem

__all__ = ["MIN_GROUP_USERS", "Catalog"]


@dataclass(frozen=True, eq=False)
class Catalog:
    """Immutable, shared by every request (and thread) of a replica; arrays are read-only."""

    features: FeatureTables
    user_ids: list[str]
    item_ids: list[str]
    user_index: dict[str, int]
    item_index: dict[str, int]
    genre_names: list[str]
    titles: list[str] | None
    item_genres: BoolArray  # (n_items, n_genres)
    user_age: IntArray | None  # years, 0 when unknown
    user_gender: list[str] | None
    seen_indptr: IntArray  # (n_users + 1,) CSR over seen_indices
    seen_indices: IntArray
    #: Every item ranked globally and per demographic segment.
    segments: SegmentPopularity

    @property
    def popular(self) -> IntArray:
        """Every item, most popular first."""
        return self.segments.popular

    @property
    def n_users(self) -> int:
        return len(self.user_ids)

    @property
    def n_items(self) -> int:
        return len(self.item_ids)

    @classmethod
    def load(cls, directory: Path) -> Catalog:
        """Read a user tower version directory; a missing required file or tables that do not
        agree with each other fail here, naming the file, not on the first request."""
        directory = Path(directory)
        features = load_features(_required(directory / FEATURES_FILE))
        user_ids, item_ids = _read_ids(_required(directory / IDS_FILE))
        n_users, n_items = len(user_ids), len(item_ids)
        if features.user_dense.shape[0] != n_users or features.item_dense.shape[0] != n_items:
            raise ValueError(
                f"{directory / IDS_FILE}: {n_users} users and {n_items} items, but "
                f"{FEATURES_FILE} has {features.user_dense.shape[0]} and "
                f"{features.item_dense.shape[0]}"
            )
        layout = features.layout
        start = layout.item_genre_start
        item_genres = features.item_dense[:, start : start + layout.n_genres] > 0.5
        extra = _read_catalog(directory / CATALOG_FILE, n_users, n_items, layout.n_genres)
        genre_names = extra.genres or [f"genre_{g}" for g in range(layout.n_genres)]
        if (directory / SEEN_FILE).exists():
            indptr, indices = _read_seen(directory / SEEN_FILE, n_users, n_items)
        else:
            indptr, indices = _seen_from_history(features.history, n_items)
        popular = np.argsort(-features.item_popularity, kind="stable").astype(np.int64)
        segments = SegmentPopularity.build(indptr, indices, popular, extra.age, extra.gender)
        for array in (item_genres, indptr, indices, popular, *_arrays_of(features)):
            array.setflags(write=False)
        return cls(
            features=features,
            user_ids=user_ids,
            item_ids=item_ids,
            user_index={u: i for i, u in enumerate(user_ids)},
            item_index={item: i for i, item in enumerate(item_ids)},
            genre_names=genre_names,
            titles=extra.titles,
            item_genres=item_genres,
            user_age=extra.age,
            user_gender=extra.gender,
            seen_indptr=indptr,
            seen_indices=indices,
            segments=segments,
        )

    def seen(self, index: int) -> IntArray:
        """Item indices user ``index`` interacted with in training (never recommended again)."""
        if not 0 <= index < self.n_users:
            raise IndexError(f"user index {index} out of range 0..{self.n_users - 1}")
        return self.seen_indices[self.seen_indptr[index] : self.seen_indptr[index + 1]]

    def popular_for(
        self, context: Mapping[str, str], k: int, exclude: IntArray | None = None
    ) -> IntArray:
        """The ``k`` most popular items in the context's demographic group, without
        ``exclude``; the cold-start answer for a user the store does not know."""
        if k < 1:
            raise ValueError(f"k must be at least 1, got {k}")
        ranking = self._ranking(context)[1]
        if exclude is None or len(exclude) == 0:
            return ranking[:k]
        head = ranking[: k + len(exclude)]
        return head[~np.isin(head, exclude)][:k]

    def popular_source(self, context: Mapping[str, str]) -> str:
        """Which list :meth:`popular_for` answers from: ``gender+age``, ``age``, ``gender`` or
        ``global``; for reporting the fallback taken."""
        return self._ranking(context)[0]

    def genre_labels(self, index: int) -> tuple[str, ...]:
        self._check_item(index)
        return tuple(self.genre_names[g] for g in np.flatnonzero(self.item_genres[index]))

    def describe(self, index: int) -> tuple[str, str | None, tuple[str, ...]]:
        """``(item_id, title, genres)`` of an item index, as a response shows it."""
        labels = self.genre_labels(index)
        title = self.titles[index] if self.titles is not None else None
        return self.item_ids[index], title, labels

    def scored(self, items: IntArray, scores: FloatArray) -> list[ScoredItem]:
        """An answer's items as a response shows them, each with its score (6 decimals)."""
        out = []
        for index, score in zip(items, scores, strict=True):
            item_id, title, genres = self.describe(int(index))
            out.append(ScoredItem(item_id, round(float(score), 6), title, genres))
        return out

    def demographics(self, index: int) -> dict[str, str]:
        """A known user's demographics as a request context (empty when the build had none)."""
        out: dict[str, str] = {}
        if self.user_gender is not None:
            out["gender"] = self.user_gender[index]
        if self.user_age is not None and int(self.user_age[index]) > 0:
            out["age"] = str(int(self.user_age[index]))
        return out

    def _ranking(self, context: Mapping[str, str]) -> tuple[str, IntArray]:
        gender = self.segments.gender_named(context.get("gender"))
        return self.segments.ranking(gender, _context_bucket(context.get("age")))

    def _check_item(self, index: int) -> None:
        if not 0 <= index < self.n_items:
            raise IndexError(f"item index {index} out of range 0..{self.n_items - 1}")


@dataclass(frozen=True)
class _Extra:
    genres: list[str] | None = None
    titles: list[str] | None = None
    age: IntArray | None = None
    gender: list[str] | None = None


def _required(path: Path) -> Path:
    if not path.is_file():
        raise FileNotFoundError(
            f"{path}: required catalog file {path.name} is missing (the model build writes it "
            "into the user_tower version directory)"
        )
    return path


def _read_ids(path: Path) -> tuple[list[str], list[str]]:
    data = json.loads(path.read_text())
    if not isinstance(data, dict) or not {"users", "items"} <= data.keys():
        raise ValueError(f"{path}: expected an object with 'users' and 'items' lists")
    return [str(u) for u in data["users"]], [str(i) for i in data["items"]]


def _read_catalog(path: Path, n_users: int, n_items: int, n_genres: int) -> _Extra:
    if not path.is_file():
        return _Extra()
    data: Any = json.loads(path.read_text())
    if not isinstance(data, dict):
        raise ValueError(f"{path}: expected a JSON object")
    genres = _str_list(path, data, "genres", n_genres)
    titles = _str_list(path, data, "titles", n_items)
    users = data.get("users")
    if not isinstance(users, dict):
        return _Extra(genres=genres, titles=titles)
    gender = _str_list(path, users, "gender", n_users)
    ages = users.get("age")
    age = None
    if ages is not None:
        age = np.asarray(ages, dtype=np.int64)
        if age.shape != (n_users,):
            raise ValueError(f"{path}: users.age has {age.size} entries, expected {n_users}")
        age.setflags(write=False)
    return _Extra(genres=genres, titles=titles, age=age, gender=gender)


def _str_list(path: Path, data: dict[str, Any], key: str, length: int) -> list[str] | None:
    values = data.get(key)
    if values is None:
        return None
    if not isinstance(values, list) or len(values) != length:
        size = len(values) if isinstance(values, list) else type(values).__name__
        raise ValueError(f"{path}: '{key}' has {size} entries, expected {length}")
    return [str(v) for v in values]


def _read_seen(path: Path, n_users: int, n_items: int) -> tuple[IntArray, IntArray]:
    with np.load(path) as data:
        indptr = np.asarray(data["indptr"], dtype=np.int64)
        indices = np.asarray(data["indices"], dtype=np.int64)
    valid = (
        indptr.shape == (n_users + 1,)
        and indptr[0] == 0
        and indptr[-1] == len(indices)
        and bool(np.all(np.diff(indptr) >= 0))
        and (len(indices) == 0 or (indices.min() >= 0 and indices.max() < n_items))
    )
    if not valid:
        raise ValueError(f"{path}: not a CSR of {n_users} users over {n_items} items")
    return indptr, indices


def _seen_from_history(history: IntArray, n_items: int) -> tuple[IntArray, IntArray]:
    """Older builds: the recent positives stand in for the seen set (ids are index + 1)."""
    if history.size and history.max() > n_items:
        raise ValueError(f"{FEATURES_FILE}: history names item ids beyond {n_items}")
    present = history > 0
    indptr = np.zeros(history.shape[0] + 1, dtype=np.int64)
    np.cumsum(present.sum(axis=1), out=indptr[1:])
    return indptr, history[present].astype(np.int64) - 1


def _context_bucket(value: str | None) -> int | None:
    if not isinstance(value, str):
        return None
    try:
        age = int(value.strip())
    except ValueError:
        return None
    if not 0 <= age <= 200:  # checked at the edge too; numpy would overflow on 10**20
        return None
    return int(age_buckets(np.array([age], dtype=np.int64))[0]) or None


def _arrays_of(features: FeatureTables) -> tuple[Any, ...]:
    return (features.user_dense, features.item_dense, features.history, features.item_popularity)
