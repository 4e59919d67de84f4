"""Seeded synthetic interaction data with the MovieLens schema, for scale runs and fast tests.

Real datasets are either small (MovieLens 100k) or slow to fetch; the factory still has to be
exercised at millions of users and in second-long unit tests. This generator produces data of any
size with the same tables and the same bring-your-own file format the factory reads, and with a
planted, learnable signal so that training on it measurably beats a popularity baseline:

* every user and every item belongs to one of ``n_clusters`` latent taste clusters;
* a user picks items (without replacement) with probability proportional to the item's power-law
  popularity, multiplied by ``affinity_boost`` when the clusters match;
* ratings are higher for matching clusters, so ``rating >= 4`` positives carry the signal;
* item genres and user age/occupation correlate with the cluster, so side features help too;
* each user's events have strictly increasing timestamps, so time-ordered splits are meaningful.

Determinism does not depend on memory or on ``chunk_users``: users are generated in fixed blocks
(a size derived from the config only), each from its own ``SeedSequence(seed, (stream, block))``,
so any chunking of the output, any ``[start, stop)`` user range and the in-memory
:func:`generate` agree exactly. Memory is bounded by about ``max(chunk_users, block)`` users of
interactions plus the item table.
"""

from __future__ import annotations

import hashlib
import math
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TextIO

import numpy as np
import numpy.typing as npt
from pydantic import BaseModel, ConfigDict, Field, model_validator

from contract.arrays import FloatArray, IntArray
from training.progress import Progress
from training.tables import Dataset, Interactions, Items, Users
from training.writers import (
    INTERACTIONS_HEADER,
    ITEMS_HEADER,
    USERS_HEADER,
    write_items,
    write_users,
)

__all__ = [
    "GENDERS",
    "INTERACTIONS_HEADER",
    "ITEMS_HEADER",
    "MAX_IN_MEMORY_INTERACTIONS",
    "OCCUPATIONS",
    "USERS_HEADER",
    "SyntheticConfig",
    "fingerprint",
    "generate",
    "generate_items",
    "generate_users",
    "iter_chunks",
    "iter_interaction_chunks",
    "latent_item_clusters",
    "latent_user_clusters",
    "write_files",
]

#: :func:`generate` refuses configs whose nominal interaction count exceeds this.
MAX_IN_MEMORY_INTERACTIONS = 50_000_000

#: Gender vocabulary; ``Users.gender`` holds codes into it.
GENDERS: list[str] = ["F", "M"]

#: Occupation vocabulary; ``Users.occupation`` holds codes into it.
OCCUPATIONS: list[str] = [
    "student",
    "engineer",
    "educator",
    "artist",
    "healthcare",
    "administrator",
    "writer",
    "scientist",
    "retired",
    "other",
]

# Independent random streams: one for items, one per user block for attributes, one per user
# block for interactions (so users can be generated without generating interactions).
_ITEM_STREAM = 0
_USER_STREAM = 1
_EVENT_STREAM = 2

_MAX_BLOCK_USERS = 4096
_BLOCK_INTERACTIONS = 1 << 20  # target rows per block, bounds memory for heavy users
_DENSE_CELLS = 1 << 22  # max users x items cells in the dense (Gumbel top-k) fallback
_REJECTION_ROUNDS = 4

_RATING_MEAN = 3.0  # latent rating of a non-matching pair before biases and noise
_USER_BIAS_STD = 0.35
_ITEM_QUALITY_STD = 0.35
_AGE_STD = 9.0
_FEMALE_RATE = 0.4
_GENRE_COUNT_P = (0.5, 0.35, 0.15)  # P(item has 1, 2, 3 genres)


class SyntheticConfig(BaseModel):
    """Every knob of the generator; the canonical JSON of it (minus ``chunk_users``) is the
    dataset's fingerprint."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    n_users: int = Field(default=2_000, ge=1, le=10_000_000, description="Number of users.")
    n_items: int = Field(default=1_000, ge=1, le=1_000_000, description="Number of items.")
    interactions_per_user: int = Field(
        default=40,
        ge=1,
        le=1_000_000,
        description="Mean interactions per user; counts are the floor plus a geometric draw, "
        "capped at n_items.",
    )
    min_interactions_per_user: int = Field(
        default=5,
        ge=1,
        le=1_000_000,
        description="Floor of the per-user interaction count (capped at n_items).",
    )
    n_clusters: int = Field(
        default=8, ge=1, le=1024, description="Latent taste clusters shared by users and items."
    )
    n_genres: int = Field(
        default=12, ge=1, le=100, description='Size of the genre vocabulary ("genre_00", ...).'
    )
    popularity_exponent: float = Field(
        default=1.0,
        ge=0.0,
        le=3.0,
        allow_inf_nan=False,
        description="Zipf exponent of item popularity: weight = rank**-exponent over a random "
        "permutation of items (0 = uniform).",
    )
    affinity_boost: float = Field(
        default=8.0,
        ge=1.0,
        le=1_000.0,
        allow_inf_nan=False,
        description="Multiplier on the pick probability of items in the user's own cluster.",
    )
    rating_signal: float = Field(
        default=1.0,
        ge=0.0,
        le=4.0,
        allow_inf_nan=False,
        description="Latent rating bonus of a same-cluster pair (stars, before rounding).",
    )
    rating_noise: float = Field(
        default=1.0,
        ge=0.0,
        le=5.0,
        allow_inf_nan=False,
        description="Standard deviation of per-event rating noise (stars, before rounding).",
    )
    genre_signal: float = Field(
        default=0.8,
        ge=0.0,
        le=1.0,
        allow_inf_nan=False,
        description="Probability that an item's first genre is one of its cluster's two home "
        "genres rather than uniform.",
    )
    occupation_signal: float = Field(
        default=0.35,
        ge=0.0,
        le=1.0,
        allow_inf_nan=False,
        description="Probability that a user's occupation is their cluster's favourite one.",
    )
    seed: int = Field(default=0, ge=0, description="Root seed of every random stream.")
    chunk_users: int = Field(
        default=50_000,
        ge=1,
        le=10_000_000,
        description="Users per streamed chunk. Bounds memory only; never changes the data.",
    )
    start_timestamp: int = Field(
        default=880_000_000,
        ge=0,
        le=4_000_000_000,
        description="Earliest user start time (unix s).",
    )
    active_span_seconds: int = Field(
        default=94_608_000,
        ge=0,
        le=1_000_000_000,
        description="User start times are uniform over this window after start_timestamp.",
    )
    mean_gap_seconds: float = Field(
        default=43_200.0,
        ge=0.0,
        le=1e8,
        allow_inf_nan=False,
        description="Mean gap between a user's successive events (gaps are 1 + exponential).",
    )

    @model_validator(mode="after")
    def _mean_not_below_floor(self) -> SyntheticConfig:
        if self.interactions_per_user < self.min_interactions_per_user:
            raise ValueError(
                f"interactions_per_user ({self.interactions_per_user}) must be >= "
                f"min_interactions_per_user ({self.min_interactions_per_user})"
            )
        return self


def fingerprint(config: SyntheticConfig) -> str:
    """``"synthetic:" + sha256(canonical config JSON)``, the dataset's ``sha256`` field.

    The JSON is ``config.model_dump_json(exclude={"chunk_users"})``: fields in declaration order,
    no whitespace. ``chunk_users`` is excluded because it never changes the generated data.
    """
    canonical = config.model_dump_json(exclude={"chunk_users"})
    return "synthetic:" + hashlib.sha256(canonical.encode("utf-8")).hexdigest()


# --------------------------------------------------------------------------- latent structure


@dataclass(frozen=True)
class _ItemLatents:
    """Hidden item structure plus a cluster-sorted cumulative weight table for sampling."""

    cluster: IntArray  # (n_items,)
    log_weight: npt.NDArray[np.float64]  # (n_items,) log popularity
    quality: npt.NDArray[np.float64]  # (n_items,) rating bias
    order: IntArray  # item indices sorted by cluster (stable)
    cum: npt.NDArray[np.float64]  # cumulative normalised weight along ``order``
    cluster_lo: npt.NDArray[np.float64]  # (n_clusters,) cum weight before each cluster
    cluster_hi: npt.NDArray[np.float64]  # (n_clusters,) cum weight through each cluster
    cluster_end: IntArray  # (n_clusters,) exclusive end position of each cluster in ``order``
    cluster_mass: npt.NDArray[np.float64]  # (n_clusters,) normalised popularity of each cluster


def _rng(config: SyntheticConfig, *key: int) -> np.random.Generator:
    return np.random.Generator(np.random.PCG64(np.random.SeedSequence(config.seed, spawn_key=key)))


def _item_latents(config: SyntheticConfig) -> tuple[_ItemLatents, np.random.Generator]:
    """Draw item clusters, popularity and quality; returns the rng to continue with."""
    rng = _rng(config, _ITEM_STREAM)
    n, k = config.n_items, config.n_clusters
    cluster = rng.integers(0, k, size=n, dtype=np.int64)
    rank = rng.permutation(n).astype(np.float64) + 1.0
    log_weight = -config.popularity_exponent * np.log(rank)
    quality = rng.normal(0.0, _ITEM_QUALITY_STD, size=n)

    weight = np.exp(log_weight - log_weight.max())
    weight /= weight.sum()
    order = np.argsort(cluster, kind="stable").astype(np.int64)
    cum = np.cumsum(weight[order])
    cluster_end = np.searchsorted(cluster[order], np.arange(k), side="right").astype(np.int64)
    cluster_start = np.concatenate([[0], cluster_end[:-1]])
    padded = np.concatenate([[0.0], cum])
    latents = _ItemLatents(
        cluster=cluster,
        log_weight=log_weight,
        quality=quality,
        order=order,
        cum=cum,
        cluster_lo=padded[cluster_start],
        cluster_hi=padded[cluster_end],
        cluster_end=cluster_end,
        cluster_mass=padded[cluster_end] - padded[cluster_start],
    )
    return latents, rng


def latent_item_clusters(config: SyntheticConfig) -> IntArray:
    """The hidden cluster of every item (for diagnostics and tests)."""
    return _item_latents(config)[0].cluster


def _home_genres(config: SyntheticConfig) -> IntArray:
    """Two home genres per cluster, shape (n_clusters, 2); clusters share genres when few."""
    g, k = config.n_genres, config.n_clusters
    c = np.arange(k, dtype=np.int64)
    return np.stack([(2 * c) % g, (2 * c + 1) % g], axis=1)


def _favourite_occupation(cluster: IntArray) -> IntArray:
    return (cluster * 3) % len(OCCUPATIONS)


def _cluster_mean_age(config: SyntheticConfig, cluster: IntArray) -> npt.NDArray[np.float64]:
    spread = np.asarray(cluster, dtype=np.float64) / max(1, config.n_clusters - 1)
    return 24.0 + 26.0 * spread


# --------------------------------------------------------------------------- blocks of users


def _block_users(config: SyntheticConfig) -> int:
    """Users per seeded block: a function of the config only, never of ``chunk_users``."""
    return max(1, min(_MAX_BLOCK_USERS, _BLOCK_INTERACTIONS // config.interactions_per_user))


@dataclass(frozen=True)
class _UserBlock:
    start: int  # global index of the block's first user
    cluster: IntArray
    bias: npt.NDArray[np.float64]
    count: IntArray  # interactions to draw
    age: IntArray
    gender: IntArray
    occupation: IntArray
    zip_code: IntArray

    def __len__(self) -> int:
        return int(self.cluster.shape[0])


def _user_block(config: SyntheticConfig, block: int) -> _UserBlock:
    size = _block_users(config)
    start = block * size
    n = min(size, config.n_users - start)
    rng = _rng(config, _USER_STREAM, block)
    cluster = rng.integers(0, config.n_clusters, size=n, dtype=np.int64)
    bias = rng.normal(0.0, _USER_BIAS_STD, size=n)

    floor = config.min_interactions_per_user
    extra_mean = config.interactions_per_user - floor
    extra = rng.geometric(1.0 / (extra_mean + 1.0), size=n).astype(np.int64) - 1
    count = np.minimum(floor + extra, config.n_items)

    age = np.rint(rng.normal(_cluster_mean_age(config, cluster), _AGE_STD))
    age = np.clip(age, 18, 70).astype(np.int64)
    gender = (rng.random(n) >= _FEMALE_RATE).astype(np.int64)  # 0 = "F", 1 = "M"
    favourite = rng.random(n) < config.occupation_signal
    occupation = np.where(
        favourite,
        _favourite_occupation(cluster),
        rng.integers(0, len(OCCUPATIONS), size=n, dtype=np.int64),
    )
    zip_code = rng.integers(0, 100_000, size=n, dtype=np.int64)
    return _UserBlock(start, cluster, bias, count, age, gender, occupation, zip_code)


def _n_blocks(config: SyntheticConfig) -> int:
    return -(-config.n_users // _block_users(config))


def _sample_items(
    rng: np.random.Generator, items: _ItemLatents, users: _UserBlock, boost: float
) -> tuple[IntArray, IntArray]:
    """Per user, ``count`` distinct items in successive-sampling order (no replacement).

    The distribution is p(i | u) ∝ popularity(i) * (boost if cluster(i) == cluster(u) else 1).
    Taking the first distinct draws of an i.i.d. stream from p is exactly sampling without
    replacement, so this draws with replacement (cluster mixture + inverse CDF, no users x items
    matrix), de-duplicates and tops up; users still short after a few rounds, or who need a large
    share of all items, finish with an exact Gumbel top-k over the remaining items.
    Returns (local user, item), grouped by user, in draw order within a user.
    """
    n_items = int(items.cluster.shape[0])
    count = users.count
    # Mixture: the global popularity distribution, plus (boost-1) x the own-cluster slice of it.
    own_mass = (boost - 1.0) * items.cluster_mass[users.cluster]
    p_own = own_mass / (1.0 + own_mass)

    dense = 2 * count > n_items
    have = np.zeros(len(users), dtype=np.int64)
    acc_user = np.empty(0, dtype=np.int64)  # rows of still-pending users, draw order
    acc_item = np.empty(0, dtype=np.int64)
    done_user: list[IntArray] = []  # rows of finished users, draw order
    done_item: list[IntArray] = []
    pending = np.flatnonzero(~dense)
    for round_ in range(_REJECTION_ROUNDS):
        if pending.size == 0:
            break
        deficit = count[pending] - have[pending]
        factor = 1.3 if round_ == 0 else 2.0
        draws = np.ceil(deficit * factor).astype(np.int64) + 4 * (round_ + 1)
        user = np.repeat(pending, draws)
        cluster = users.cluster[user]
        own = rng.random(user.shape[0]) < p_own[user]
        lo = np.where(own, items.cluster_lo[cluster], 0.0)
        hi = np.where(own, items.cluster_hi[cluster], items.cum[-1])
        end = np.where(own, items.cluster_end[cluster], n_items)
        pos = np.searchsorted(items.cum, lo + rng.random(user.shape[0]) * (hi - lo), side="right")
        item = items.order[np.minimum(pos, end - 1)]

        # Drop repeats, keeping each (user, item)'s first draw; a stable sort keeps draw order.
        acc_user = np.concatenate([acc_user, user])
        acc_item = np.concatenate([acc_item, item])
        key = acc_user * n_items + acc_item
        by_key = np.argsort(key, kind="stable")
        sorted_key = key[by_key]
        keep = np.ones(key.shape[0], dtype=np.bool_)
        keep[by_key[1:][sorted_key[1:] == sorted_key[:-1]]] = False
        acc_user, acc_item = acc_user[keep], acc_item[keep]
        have[pending] = np.bincount(acc_user, minlength=len(users))[pending]

        finished = (have >= count)[acc_user]
        done_user.append(acc_user[finished])
        done_item.append(acc_item[finished])
        acc_user, acc_item = acc_user[~finished], acc_item[~finished]
        pending = pending[have[pending] < count[pending]]

    # Group by user (stable: draw order within a user) and trim everyone to their count.
    all_user = np.concatenate([*done_user, acc_user])
    all_item = np.concatenate([*done_item, acc_item])
    by_user = np.argsort(all_user, kind="stable")
    acc_user, acc_item = all_user[by_user], all_item[by_user]
    group_start = np.concatenate([[0], np.cumsum(have)[:-1]])
    rank = np.arange(acc_user.shape[0]) - group_start[acc_user]
    keep = rank < count[acc_user]
    acc_user, acc_item = acc_user[keep], acc_item[keep]
    have = np.minimum(have, count)

    short = np.flatnonzero(have < count)
    if short.size:
        extra_user, extra_item = _gumbel_top_up(rng, items, users, boost, acc_user, acc_item, short)
        acc_user = np.concatenate([acc_user, extra_user])
        acc_item = np.concatenate([acc_item, extra_item])
        by_user = np.argsort(acc_user, kind="stable")
        acc_user, acc_item = acc_user[by_user], acc_item[by_user]
    return acc_user, acc_item


def _gumbel_top_up(
    rng: np.random.Generator,
    items: _ItemLatents,
    users: _UserBlock,
    boost: float,
    have_user: IntArray,
    have_item: IntArray,
    short: IntArray,
) -> tuple[IntArray, IntArray]:
    """Exact continuation of successive sampling for ``short`` users: Gumbel top-k over the
    items they do not have yet, in row batches bounded by ``_DENSE_CELLS``."""
    n_items = int(items.cluster.shape[0])
    have_count = np.bincount(have_user, minlength=len(users))
    group_start = np.concatenate([[0], np.cumsum(have_count)[:-1]])
    rows = max(1, _DENSE_CELLS // n_items)
    log_boost = math.log(boost)
    out_user: list[IntArray] = []
    out_item: list[IntArray] = []
    for lo in range(0, short.shape[0], rows):
        batch = short[lo : lo + rows]
        keys = items.log_weight[None, :] + log_boost * (
            items.cluster[None, :] == users.cluster[batch, None]
        )
        keys = keys + rng.gumbel(size=keys.shape)
        for r, u in enumerate(batch.tolist()):
            s = group_start[u]
            keys[r, have_item[s : s + have_count[u]]] = -np.inf
        need = users.count[batch] - have_count[batch]
        best = np.argsort(-keys, axis=1, kind="stable")[:, : int(need.max())]
        take = np.arange(best.shape[1])[None, :] < need[:, None]
        out_user.append(np.broadcast_to(batch[:, None], best.shape)[take])
        out_item.append(best[take].astype(np.int64))
    return np.concatenate(out_user), np.concatenate(out_item)


def _interaction_block(
    config: SyntheticConfig, items: _ItemLatents, users: _UserBlock, block: int
) -> Interactions:
    """All interactions of one user block, grouped by user, time-ordered within a user."""
    rng = _rng(config, _EVENT_STREAM, block)
    local, item = _sample_items(rng, items, users, config.affinity_boost)
    n = local.shape[0]

    # Time order independent of draw order (which favours popular items early).
    order = np.argsort((local << 32) | rng.integers(0, 1 << 32, size=n, dtype=np.int64))
    local, item = local[order], item[order]

    starts = config.start_timestamp + rng.integers(
        0, config.active_span_seconds + 1, size=len(users), dtype=np.int64
    )
    gaps = 1 + np.floor(rng.exponential(config.mean_gap_seconds, size=n)).astype(np.int64)
    cum = np.cumsum(gaps)
    counts = np.bincount(local, minlength=len(users))
    before = np.concatenate([[0], cum])[np.concatenate([[0], np.cumsum(counts)[:-1]])]
    timestamp = starts[local] + cum - before[local]

    match = items.cluster[item] == users.cluster[local]
    latent = (
        _RATING_MEAN
        + users.bias[local]
        + items.quality[item]
        + config.rating_signal * match
        + rng.normal(0.0, 1.0, size=n) * config.rating_noise
    )
    rating: FloatArray = np.clip(np.rint(latent), 1, 5).astype(np.float32)
    return Interactions(
        user=(local + users.start).astype(np.int64),
        item=item.astype(np.int64),
        rating=rating,
        timestamp=timestamp.astype(np.int64),
    )


# --------------------------------------------------------------------------- public tables


def _check_range(config: SyntheticConfig, start: int, stop: int | None) -> int:
    stop = config.n_users if stop is None else stop
    if not 0 <= start <= stop <= config.n_users:
        raise ValueError(f"user range [{start}, {stop}) is not within [0, {config.n_users}]")
    return stop


def _user_blocks(config: SyntheticConfig, start: int, stop: int) -> list[_UserBlock]:
    size = _block_users(config)
    if start == stop:
        return []
    return [_user_block(config, b) for b in range(start // size, (stop - 1) // size + 1)]


def _slice_blocks(blocks: list[_UserBlock], column: str, start: int, stop: int) -> IntArray:
    """Users ``[start, stop)`` of one integer column of consecutive blocks."""
    if not blocks:
        return np.empty(0, dtype=np.int64)
    whole = np.concatenate([getattr(b, column) for b in blocks])
    first = blocks[0].start
    return np.asarray(whole[start - first : stop - first], dtype=np.int64)


def latent_user_clusters(
    config: SyntheticConfig, start: int = 0, stop: int | None = None
) -> IntArray:
    """The hidden cluster of users ``[start, stop)`` (for diagnostics and tests)."""
    stop = _check_range(config, start, stop)
    return _slice_blocks(_user_blocks(config, start, stop), "cluster", start, stop)


def _users_from_blocks(blocks: list[_UserBlock], start: int, stop: int) -> Users:
    return Users(
        ids=[f"u{i}" for i in range(start, stop)],
        age=_slice_blocks(blocks, "age", start, stop),
        gender=_slice_blocks(blocks, "gender", start, stop),
        occupation=_slice_blocks(blocks, "occupation", start, stop),
        zip_code=[f"{z:05d}" for z in _slice_blocks(blocks, "zip_code", start, stop).tolist()],
        gender_vocab=list(GENDERS),
        occupation_vocab=list(OCCUPATIONS),
    )


def generate_users(config: SyntheticConfig, start: int = 0, stop: int | None = None) -> Users:
    """Users ``[start, stop)`` (default: all); identical to the same rows of :func:`generate`."""
    stop = _check_range(config, start, stop)
    return _users_from_blocks(_user_blocks(config, start, stop), start, stop)


def generate_items(config: SyntheticConfig) -> Items:
    """All items: ids ``"i0"``.., titles ``"Item 0"``.., years 1950..2020, cluster-linked genres."""
    latents, rng = _item_latents(config)
    n, g = config.n_items, config.n_genres
    year = 1950 + np.minimum(np.floor(71.0 * np.sqrt(rng.random(n))), 70).astype(np.int64)

    home = _home_genres(config)[latents.cluster]  # (n, 2)
    first = np.where(
        rng.random(n) < config.genre_signal,
        home[np.arange(n), rng.integers(0, 2, size=n)],
        rng.integers(0, g, size=n, dtype=np.int64),
    )
    n_genres = 1 + rng.choice(len(_GENRE_COUNT_P), size=n, p=_GENRE_COUNT_P)
    genres = np.zeros((n, g), dtype=np.bool_)
    genres[np.arange(n), first] = True
    others = rng.integers(0, g, size=(n, len(_GENRE_COUNT_P) - 1), dtype=np.int64)
    for j in range(others.shape[1]):
        rows = np.flatnonzero(n_genres > j + 1)
        genres[rows, others[rows, j]] = True

    return Items(
        ids=[f"i{i}" for i in range(n)],
        title=[f"Item {i}" for i in range(n)],
        year=year,
        genres=genres,
        genre_vocab=[f"genre_{j:02d}" for j in range(g)],
    )


def _concat_interactions(parts: list[Interactions]) -> Interactions:
    if not parts:
        return Interactions(
            user=np.empty(0, dtype=np.int64),
            item=np.empty(0, dtype=np.int64),
            rating=np.empty(0, dtype=np.float32),
            timestamp=np.empty(0, dtype=np.int64),
        )
    if len(parts) == 1:
        return parts[0]
    return Interactions(
        user=np.concatenate([p.user for p in parts]),
        item=np.concatenate([p.item for p in parts]),
        rating=np.concatenate([p.rating for p in parts]),
        timestamp=np.concatenate([p.timestamp for p in parts]),
    )


def iter_chunks(config: SyntheticConfig) -> Iterator[tuple[Users, Interactions]]:
    """Stream ``(users, interactions)`` for consecutive ranges of ``chunk_users`` users.

    Interactions hold global user indices (chunk ``c`` covers ``[c * chunk_users, ...)``), are
    grouped by user and time-ordered within a user. The concatenation of all chunks equals
    :func:`generate` for every ``chunk_users``.
    """
    items, _ = _item_latents(config)
    size = _block_users(config)
    cached: tuple[int, _UserBlock, Interactions] | None = None
    for start in range(0, config.n_users, config.chunk_users):
        stop = min(start + config.chunk_users, config.n_users)
        blocks: list[_UserBlock] = []
        pieces: list[Interactions] = []
        for b in range(start // size, (stop - 1) // size + 1):
            if cached is None or cached[0] != b:
                users = _user_block(config, b)
                cached = (b, users, _interaction_block(config, items, users, b))
            _, users, events = cached
            blocks.append(users)
            lo, hi = np.searchsorted(events.user, [start, stop])
            pieces.append(
                events if (lo, hi) == (0, len(events)) else events.take(np.arange(lo, hi))
            )
        yield _users_from_blocks(blocks, start, stop), _concat_interactions(pieces)


def iter_interaction_chunks(config: SyntheticConfig) -> Iterator[Interactions]:
    """Stream the interactions of consecutive ranges of ``chunk_users`` users (see
    :func:`iter_chunks`); never holds more than about one chunk in memory."""
    for _, interactions in iter_chunks(config):
        yield interactions


def generate(config: SyntheticConfig) -> Dataset:
    """The whole dataset in memory, named ``"synthetic"`` with ``sha256 = fingerprint(config)``.

    Raises ``ValueError`` when ``n_users * interactions_per_user`` exceeds
    ``MAX_IN_MEMORY_INTERACTIONS``; stream with :func:`iter_chunks` or :func:`write_files` then.
    """
    nominal = config.n_users * config.interactions_per_user
    if nominal > MAX_IN_MEMORY_INTERACTIONS:
        raise ValueError(
            f"synthetic config asks for about {nominal:,} interactions "
            f"({config.n_users:,} users x {config.interactions_per_user}), more than the "
            f"{MAX_IN_MEMORY_INTERACTIONS:,} generate() builds in memory; use "
            "iter_interaction_chunks() or write_files() to stream it instead"
        )
    items, _ = _item_latents(config)
    blocks = [_user_block(config, b) for b in range(_n_blocks(config))]
    events = [_interaction_block(config, items, u, b) for b, u in enumerate(blocks)]
    return Dataset(
        name="synthetic",
        users=_users_from_blocks(blocks, 0, config.n_users),
        items=generate_items(config),
        interactions=_concat_interactions(events),
        sha256=fingerprint(config),
    )


# --------------------------------------------------------------------------- files


def _write_interactions(out: TextIO, events: Interactions) -> None:
    if len(events) == 0:
        return
    rows = map(
        "u{}\ti{}\t{}\t{}".format,
        events.user.tolist(),
        events.item.tolist(),
        events.rating.astype(np.int64).tolist(),
        events.timestamp.tolist(),
    )
    out.write("\n".join(rows))
    out.write("\n")


def write_files(config: SyntheticConfig, out_dir: Path, progress: bool = True) -> dict[str, Path]:
    """Stream the dataset to ``interactions.tsv``, ``items.tsv`` and ``users.tsv`` in ``out_dir``.

    Tab-separated with a header line (the bring-your-own format the factory reads); ratings are
    integers 1..5. Written chunk by chunk into ``*.tmp`` files that replace the targets only once
    all three are complete. Returns ``{"interactions": path, "items": path, "users": path}``.
    """
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = {name: out_dir / f"{name}.tsv" for name in ("interactions", "items", "users")}
    tmps = {name: path.with_name(path.name + ".tmp") for name, path in paths.items()}
    try:
        with open(tmps["items"], "w", encoding="utf-8", newline="\n") as out:
            out.write(ITEMS_HEADER + "\n")
            write_items(out, generate_items(config))
        with (
            open(tmps["interactions"], "w", encoding="utf-8", newline="\n") as ev_out,
            open(tmps["users"], "w", encoding="utf-8", newline="\n") as us_out,
            Progress(
                -(-config.n_users // config.chunk_users), "synthetic", "chunk", enabled=progress
            ) as bar,
        ):
            ev_out.write(INTERACTIONS_HEADER + "\n")
            us_out.write(USERS_HEADER + "\n")
            for users, events in iter_chunks(config):
                _write_interactions(ev_out, events)
                write_users(us_out, users)
                bar.update(1)
        for name, path in paths.items():
            os.replace(tmps[name], path)
    except BaseException:
        for tmp in tmps.values():
            tmp.unlink(missing_ok=True)
        raise
    return paths
