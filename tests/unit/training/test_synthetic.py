"""The synthetic generator: determinism, chunking invariance, planted signal, schema, files."""

from __future__ import annotations

import logging
import re
import time
import tracemalloc
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from pydantic import ValidationError

from training import synthetic
from training.synthetic import (
    GENDERS,
    OCCUPATIONS,
    SyntheticConfig,
    fingerprint,
    generate,
    generate_items,
    generate_users,
    iter_chunks,
    iter_interaction_chunks,
    latent_item_clusters,
    latent_user_clusters,
    write_files,
)
from training.tables import Dataset, Interactions, Users

SMALL = SyntheticConfig(n_users=600, n_items=300, interactions_per_user=20, seed=3)


@pytest.fixture(scope="module")
def medium() -> tuple[SyntheticConfig, Dataset]:
    config = SyntheticConfig(n_users=3_000, n_items=2_000, seed=11)
    return config, generate(config)


def assert_interactions_equal(a: Interactions, b: Interactions) -> None:
    for name in ("user", "item", "rating", "timestamp"):
        np.testing.assert_array_equal(getattr(a, name), getattr(b, name), err_msg=name)


def assert_users_equal(a: Users, b: Users) -> None:
    assert a.ids == b.ids
    assert a.zip_code == b.zip_code
    assert (a.gender_vocab, a.occupation_vocab) == (b.gender_vocab, b.occupation_vocab)
    for name in ("age", "gender", "occupation"):
        np.testing.assert_array_equal(getattr(a, name), getattr(b, name), err_msg=name)


def concat(chunks: Iterator[Interactions]) -> Interactions:
    parts = list(chunks)
    return Interactions(
        user=np.concatenate([p.user for p in parts]),
        item=np.concatenate([p.item for p in parts]),
        rating=np.concatenate([p.rating for p in parts]),
        timestamp=np.concatenate([p.timestamp for p in parts]),
    )


# --------------------------------------------------------------------------- determinism


def test_same_seed_same_data() -> None:
    a, b = generate(SMALL), generate(SMALL)
    assert_interactions_equal(a.interactions, b.interactions)
    assert_users_equal(a.users, b.users)
    np.testing.assert_array_equal(a.items.genres, b.items.genres)
    np.testing.assert_array_equal(a.items.year, b.items.year)
    assert a.sha256 == b.sha256


def test_different_seed_different_data() -> None:
    a = generate(SMALL)
    b = generate(SMALL.model_copy(update={"seed": SMALL.seed + 1}))
    n = min(len(a.interactions), len(b.interactions))
    assert not np.array_equal(a.interactions.item[:n], b.interactions.item[:n])
    assert not np.array_equal(a.users.age, b.users.age)
    assert not np.array_equal(a.items.genres, b.items.genres)
    assert a.sha256 != b.sha256


def test_fingerprint_names_the_generator_and_ignores_chunk_size() -> None:
    data = generate(SMALL)
    assert data.name == "synthetic"
    assert data.sha256 == fingerprint(SMALL)
    assert re.fullmatch(r"synthetic:[0-9a-f]{64}", data.sha256)
    assert fingerprint(SMALL.model_copy(update={"chunk_users": 7})) == data.sha256
    assert fingerprint(SMALL.model_copy(update={"n_clusters": 9})) != data.sha256


# --------------------------------------------------------------------------- chunking


# 5_000 users span two seeded blocks of 4_096, so block boundaries are exercised as well.
CHUNKED = SyntheticConfig(n_users=5_000, n_items=500, interactions_per_user=10, seed=5)


@pytest.fixture(scope="module")
def chunked_full() -> Dataset:
    return generate(CHUNKED)


@pytest.mark.parametrize("chunk_users", [1_000, 777, 4_096, 10_000_000])
def test_chunks_concatenate_to_generate(chunked_full: Dataset, chunk_users: int) -> None:
    config = CHUNKED.model_copy(update={"chunk_users": chunk_users})
    assert_interactions_equal(concat(iter_interaction_chunks(config)), chunked_full.interactions)


def test_each_chunk_covers_its_user_range(chunked_full: Dataset) -> None:
    config = CHUNKED.model_copy(update={"chunk_users": 1_500})
    chunks = list(iter_chunks(config))
    assert len(chunks) == 4
    for c, (users, events) in enumerate(chunks):
        lo, hi = c * 1_500, min((c + 1) * 1_500, CHUNKED.n_users)
        assert users.ids == [f"u{i}" for i in range(lo, hi)]
        np.testing.assert_array_equal(np.unique(events.user), np.arange(lo, hi))
        expected = generate_users(CHUNKED, lo, hi)
        assert_users_equal(users, expected)


@pytest.mark.parametrize(("start", "stop"), [(0, 5_000), (4_000, 4_200), (4_096, 4_097), (9, 9)])
def test_user_ranges_match_full_table(chunked_full: Dataset, start: int, stop: int) -> None:
    users = generate_users(CHUNKED, start, stop)
    full = chunked_full.users
    assert users.ids == full.ids[start:stop]
    assert users.zip_code == full.zip_code[start:stop]
    for name in ("age", "gender", "occupation"):
        np.testing.assert_array_equal(getattr(users, name), getattr(full, name)[start:stop])
    np.testing.assert_array_equal(
        latent_user_clusters(CHUNKED, start, stop), latent_user_clusters(CHUNKED)[start:stop]
    )


def test_user_range_outside_table_is_rejected() -> None:
    with pytest.raises(ValueError, match="user range"):
        generate_users(SMALL, 0, SMALL.n_users + 1)
    with pytest.raises(ValueError, match="user range"):
        generate_users(SMALL, 5, 4)


# --------------------------------------------------------------------------- planted structure


def test_popularity_follows_a_power_law(medium: tuple[SyntheticConfig, Dataset]) -> None:
    config, data = medium
    counts = np.sort(np.bincount(data.interactions.item, minlength=config.n_items))[::-1]
    top_share = counts[: config.n_items // 10].sum() / counts.sum()
    assert top_share > 0.4  # vs 0.1 under uniform popularity
    # Rank-frequency slope on log-log axes, away from the head (where no-replacement saturates).
    ranks = np.arange(1, config.n_items + 1)
    lo, hi = 50, 1_000
    slope = np.polyfit(np.log(ranks[lo:hi]), np.log(np.maximum(counts[lo:hi], 1)), 1)[0]
    assert slope == pytest.approx(-config.popularity_exponent, abs=0.25)


def test_zero_exponent_means_flat_popularity() -> None:
    config = SyntheticConfig(n_users=2_000, n_items=1_000, popularity_exponent=0.0)
    counts = np.sort(np.bincount(generate(config).interactions.item, minlength=1_000))[::-1]
    assert counts[:100].sum() / counts.sum() < 0.2


def test_ratings_carry_cluster_signal(medium: tuple[SyntheticConfig, Dataset]) -> None:
    config, data = medium
    events = data.interactions
    match = latent_user_clusters(config)[events.user] == latent_item_clusters(config)[events.item]
    positive = events.rating >= 4
    assert positive[match].mean() > positive[~match].mean() + 0.2
    # Same-cluster items are also picked far more often than chance (1 / n_clusters).
    assert match.mean() > 2.0 / config.n_clusters


def test_genres_correlate_with_item_cluster(medium: tuple[SyntheticConfig, Dataset]) -> None:
    config, data = medium
    genres = data.items.genres
    cluster = latent_item_clusters(config)
    overall = genres.mean(axis=0)
    for k in range(config.n_clusters):
        within = genres[cluster == k].mean(axis=0)
        assert within.max() > 2.0 * overall[within.argmax()], k


def test_demographics_correlate_with_user_cluster(medium: tuple[SyntheticConfig, Dataset]) -> None:
    config, data = medium
    cluster = latent_user_clusters(config)
    mean_age = [data.users.age[cluster == k].mean() for k in range(config.n_clusters)]
    assert max(mean_age) - min(mean_age) > 10.0
    top_occupation_share = [
        np.bincount(data.users.occupation[cluster == k]).max() / np.sum(cluster == k)
        for k in range(config.n_clusters)
    ]
    assert min(top_occupation_share) > 2.0 / len(OCCUPATIONS)


# --------------------------------------------------------------------------- event structure


def test_timestamps_increase_per_user_and_pairs_are_unique(
    medium: tuple[SyntheticConfig, Dataset],
) -> None:
    config, data = medium
    events = data.interactions
    assert np.all(np.diff(events.user) >= 0)  # grouped by user
    same_user = np.diff(events.user) == 0
    assert np.all(np.diff(events.timestamp)[same_user] > 0)
    assert events.timestamp.min() > config.start_timestamp
    pairs = events.user * config.n_items + events.item
    assert np.unique(pairs).shape[0] == len(events)


def test_interaction_counts_have_floor_mean_and_cap() -> None:
    config = SyntheticConfig(n_users=4_000, n_items=5_000, interactions_per_user=30, seed=2)
    per_user = np.bincount(generate(config).interactions.user, minlength=config.n_users)
    assert per_user.min() >= config.min_interactions_per_user
    assert per_user.mean() == pytest.approx(30, rel=0.05)
    assert per_user.max() > 2 * 30  # a long tail of heavy users


def test_heavy_users_on_few_items_take_distinct_items() -> None:
    # Most users want (nearly) every item: exercises the exact Gumbel top-k path.
    config = SyntheticConfig(n_users=300, n_items=12, interactions_per_user=10)
    events = generate(config).interactions
    per_user = np.bincount(events.user, minlength=config.n_users)
    assert per_user.min() >= 5
    assert per_user.max() == 12
    pairs = events.user * config.n_items + events.item
    assert np.unique(pairs).shape[0] == len(events)


# --------------------------------------------------------------------------- schema


def test_tables_match_the_declared_schema() -> None:
    data = generate(SMALL)
    users, items, events = data.users, data.items, data.interactions
    assert users.ids == [f"u{i}" for i in range(SMALL.n_users)]
    assert items.ids == [f"i{i}" for i in range(SMALL.n_items)]
    assert items.title[17] == "Item 17"
    assert users.gender_vocab == GENDERS == ["F", "M"]
    assert users.occupation_vocab == OCCUPATIONS
    assert items.genre_vocab == [f"genre_{j:02d}" for j in range(SMALL.n_genres)]

    for array in (users.age, users.gender, users.occupation, items.year):
        assert array.dtype == np.int64
        assert array.ndim == 1
    for array in (events.user, events.item, events.timestamp):
        assert array.dtype == np.int64
    assert events.rating.dtype == np.float32
    assert items.genres.dtype == np.bool_
    assert items.genres.shape == (SMALL.n_items, SMALL.n_genres)
    assert items.genres.any(axis=1).all()

    assert users.age.min() >= 18
    assert users.age.max() <= 70
    assert set(np.unique(users.gender)) <= set(range(len(GENDERS)))
    assert set(np.unique(users.occupation)) <= set(range(len(OCCUPATIONS)))
    assert all(len(z) == 5 and z.isdigit() for z in users.zip_code)
    assert items.year.min() >= 1950
    assert items.year.max() <= 2020
    assert events.user.min() >= 0
    assert events.user.max() < SMALL.n_users
    assert events.item.min() >= 0
    assert events.item.max() < SMALL.n_items
    assert set(np.unique(events.rating).tolist()) <= {1.0, 2.0, 3.0, 4.0, 5.0}


def test_generate_items_matches_dataset_items() -> None:
    items = generate_items(SMALL)
    np.testing.assert_array_equal(items.genres, generate(SMALL).items.genres)


# --------------------------------------------------------------------------- files


def read_tsv(path: Path) -> tuple[str, list[list[str]]]:
    lines = path.read_text(encoding="utf-8").splitlines()
    return lines[0], [line.split("\t") for line in lines[1:]]


def test_write_files_round_trip(tmp_path: Path) -> None:
    config = SMALL.model_copy(update={"chunk_users": 250})
    data = generate(config)
    paths = write_files(config, tmp_path, progress=False)
    assert set(paths) == {"interactions", "items", "users"}
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "interactions.tsv",
        "items.tsv",
        "users.tsv",
    ]

    header, rows = read_tsv(paths["interactions"])
    assert header == "user_id\titem_id\trating\ttimestamp"
    assert len(rows) == len(data.interactions)
    events = data.interactions
    assert [r[0] for r in rows] == [f"u{u}" for u in events.user.tolist()]
    assert [r[1] for r in rows] == [f"i{i}" for i in events.item.tolist()]
    assert [int(r[2]) for r in rows] == events.rating.astype(int).tolist()
    assert [int(r[3]) for r in rows] == events.timestamp.tolist()

    header, rows = read_tsv(paths["items"])
    assert header == "item_id\ttitle\tyear\tgenres"
    assert len(rows) == config.n_items
    vocab = data.items.genre_vocab
    for r, (item_id, title, year, genres) in enumerate(rows):
        assert (item_id, title, int(year)) == (f"i{r}", f"Item {r}", data.items.year[r])
        assert genres.split("|") == [vocab[g] for g in np.flatnonzero(data.items.genres[r])]

    header, rows = read_tsv(paths["users"])
    assert header == "user_id\tage\tgender\toccupation\tzip_code"
    assert len(rows) == config.n_users
    users = data.users
    assert rows[7] == [
        "u7",
        str(users.age[7]),
        GENDERS[users.gender[7]],
        OCCUPATIONS[users.occupation[7]],
        users.zip_code[7],
    ]


def test_write_files_shows_progress(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    # Not a terminal here, so progress is a plain log line, the last one on closing.
    with caplog.at_level(logging.INFO, "cascade.training"):
        write_files(SMALL.model_copy(update={"chunk_users": 200}), tmp_path, progress=True)
    assert any("synthetic: 3/3 chunks (100%)" in r.getMessage() for r in caplog.records)


def test_write_files_is_atomic_on_failure(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    write_files(SMALL, tmp_path, progress=False)
    before = {p.name: p.read_bytes() for p in tmp_path.iterdir()}

    def broken(config: SyntheticConfig) -> Iterator[tuple[Users, Interactions]]:
        raise RuntimeError("disk on fire")
        yield  # pragma: no cover

    monkeypatch.setattr(synthetic, "iter_chunks", broken)
    with pytest.raises(RuntimeError, match="disk on fire"):
        write_files(SMALL.model_copy(update={"seed": 99}), tmp_path, progress=False)
    assert {p.name: p.read_bytes() for p in tmp_path.iterdir()} == before


def test_large_config_streams_in_bounded_memory(tmp_path: Path) -> None:
    config = SyntheticConfig(n_users=200_000, interactions_per_user=5, chunk_users=5_000)
    total_rows = 0
    tracemalloc.start()
    try:
        for chunk in iter_interaction_chunks(config):
            assert np.unique(chunk.user).shape[0] <= config.chunk_users
            total_rows += len(chunk)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert total_rows == 200_000 * 5
    full_bytes = total_rows * (8 + 8 + 4 + 8)  # what materialising the interactions would need
    assert peak < full_bytes / 2

    started = time.perf_counter()
    paths = write_files(config, tmp_path, progress=False)
    assert time.perf_counter() - started < 20.0
    with paths["interactions"].open(encoding="utf-8") as f:
        assert sum(1 for _ in f) == total_rows + 1
    with paths["users"].open(encoding="utf-8") as f:
        assert sum(1 for _ in f) == config.n_users + 1


# --------------------------------------------------------------------------- validation


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("n_users", 0),
        ("n_items", 1_000_001),
        ("n_clusters", 0),
        ("popularity_exponent", float("nan")),
        ("chunk_users", 0),
        ("seed", -1),
    ],
)
def test_invalid_config_names_the_field(field: str, value: float) -> None:
    with pytest.raises(ValidationError) as info:
        SyntheticConfig.model_validate({field: value})
    assert [e["loc"] for e in info.value.errors()] == [(field,)]


def test_config_is_frozen_and_strict_about_fields() -> None:
    with pytest.raises(ValidationError, match="n_userz"):
        SyntheticConfig.model_validate({"n_userz": 10})
    with pytest.raises(ValidationError):
        SMALL.n_users = 5
    with pytest.raises(ValidationError, match="min_interactions_per_user"):
        SyntheticConfig(interactions_per_user=3)


def test_generate_refuses_configs_too_large_for_memory() -> None:
    config = SyntheticConfig(n_users=2_000_000, interactions_per_user=26)
    with pytest.raises(ValueError, match="write_files"):
        generate(config)
