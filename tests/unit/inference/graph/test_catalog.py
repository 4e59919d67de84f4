"""Catalog loading (with and without the optional files) and demographic popularity, on a
small hand-made build directory whose groups and answers are known in advance."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest

from contract.features import HISTORY_LENGTH, FeatureLayout, FeatureTables
from inference.graph.catalog import MIN_GROUP_USERS, Catalog

N_ITEMS = 6
GENRES = ["Action", "Comedy", "Drama"]
# Column 0 is a non-genre feature, so the genre block starts at 1.
ITEM_GENRES = np.array(
    [[1, 0, 0], [0, 1, 0], [0, 0, 1], [1, 1, 0], [0, 1, 1], [0, 0, 0]], dtype=np.float32
)
# Users in blocks: (count, gender, age, the item each has seen).
#   25 F aged 22 (bucket 2) saw item 3; 25 M aged 30 (bucket 3) saw item 4;
#   5 F aged 30 (a group too small) saw item 5; 5 of unknown gender and age saw item 2.
BLOCKS = [(25, "F", 22, 3), (25, "M", 30, 4), (5, "F", 30, 5), (5, "unknown", 0, 2)]
N_USERS = sum(b[0] for b in BLOCKS)


def user_columns() -> tuple[list[int], list[str], list[int]]:
    ages: list[int] = []
    genders: list[str] = []
    items: list[int] = []
    for count, gender, age, item in BLOCKS:
        ages += [age] * count
        genders += [gender] * count
        items += [item] * count
    return ages, genders, items


def tables() -> FeatureTables:
    """Global popularity ranks items 0..5 in order; each user's history holds its item."""
    _, _, items = user_columns()
    history = np.zeros((N_USERS, HISTORY_LENGTH), dtype=np.int64)
    history[:, 0] = np.array(items) + 1
    item_dense = np.concatenate([np.full((N_ITEMS, 1), 7.0, np.float32), ITEM_GENRES], axis=1)
    return FeatureTables(
        user_dense=np.arange(N_USERS * 4, dtype=np.float32).reshape(N_USERS, 4),
        item_dense=item_dense,
        history=history,
        item_popularity=np.array([10, 9, 8, 7, 6, 5], dtype=np.float32),
        layout=FeatureLayout(
            user_dim=4, item_dim=4, n_genres=3, user_genre_start=0, item_genre_start=1
        ),
    )


def write_build(
    directory: Path,
    *,
    catalog: bool = False,
    seen: dict[int, list[int]] | None = None,
    features: FeatureTables | None = None,
) -> Path:
    """A user tower version directory as the build writes it; ``seen`` maps a user index to
    its items (users not named see nothing) and becomes ``seen.npz``."""
    directory.mkdir(parents=True, exist_ok=True)
    (features or tables()).save(directory / "features.npz")
    ids = {"users": [f"u{i}" for i in range(N_USERS)], "items": [f"i{i}" for i in range(N_ITEMS)]}
    (directory / "ids.json").write_text(json.dumps(ids))
    if catalog:
        ages, genders, _ = user_columns()
        data = {
            "genres": GENRES,
            "titles": [f"Title {i}" for i in range(N_ITEMS)],
            "users": {"age": ages, "gender": genders, "occupation": ["other"] * N_USERS},
        }
        (directory / "catalog.json").write_text(json.dumps(data))
    if seen is not None:
        rows = [seen.get(u, []) for u in range(N_USERS)]
        indptr = np.concatenate([[0], np.cumsum([len(r) for r in rows])]).astype(np.int64)
        indices = np.array([i for r in rows for i in r], dtype=np.int64)
        np.savez(directory / "seen.npz", indptr=indptr, indices=indices)
    return directory


@pytest.fixture
def full(tmp_path: Path) -> Catalog:
    _, _, items = user_columns()
    return Catalog.load(
        write_build(tmp_path, catalog=True, seen=dict(enumerate([[i] for i in items])))
    )


def test_old_build_without_optional_files_loads_with_fallbacks(tmp_path: Path) -> None:
    catalog = Catalog.load(write_build(tmp_path))
    assert (catalog.n_users, catalog.n_items) == (N_USERS, N_ITEMS)
    assert catalog.user_index["u7"] == 7
    assert catalog.item_index["i4"] == 4
    assert catalog.genre_names == ["genre_0", "genre_1", "genre_2"]
    assert catalog.titles is None
    assert catalog.user_age is None
    assert catalog.user_gender is None
    np.testing.assert_array_equal(catalog.item_genres, ITEM_GENRES > 0.5)
    np.testing.assert_array_equal(catalog.seen(0), [3])  # history id 4 is item 3
    np.testing.assert_array_equal(catalog.seen(N_USERS - 1), [2])
    assert catalog.describe(3) == ("i3", None, ("genre_0", "genre_1"))
    assert catalog.popular_source({"gender": "F", "age": "22"}) == "global"
    np.testing.assert_array_equal(catalog.popular_for({"gender": "F", "age": "22"}, 3), [0, 1, 2])


def test_optional_files_supply_names_titles_and_seen(tmp_path: Path) -> None:
    catalog = Catalog.load(write_build(tmp_path, catalog=True, seen={0: [5, 1, 0]}))
    assert catalog.genre_names == GENRES
    assert catalog.titles is not None
    assert catalog.describe(4) == ("i4", "Title 4", ("Comedy", "Drama"))
    assert catalog.genre_labels(5) == ()
    assert catalog.user_gender is not None
    assert catalog.user_gender[30] == "M"
    assert catalog.user_age is not None
    assert int(catalog.user_age[0]) == 22
    np.testing.assert_array_equal(catalog.seen(0), [5, 1, 0])
    assert len(catalog.seen(1)) == 0  # seen.npz, not the history, is the source


def test_ages_alone_still_give_age_groups(tmp_path: Path) -> None:
    directory = write_build(tmp_path, seen={u: [3] for u in range(25)})
    ages, _, _ = user_columns()
    (directory / "catalog.json").write_text(json.dumps({"users": {"age": ages}}))
    catalog = Catalog.load(directory)
    assert catalog.genre_names == ["genre_0", "genre_1", "genre_2"]
    assert catalog.popular_source({"gender": "F", "age": "22"}) == "age"
    assert int(catalog.popular_for({"gender": "F", "age": "22"}, 1)[0]) == 3
    assert catalog.popular_source({"gender": "F"}) == "global"


@pytest.mark.parametrize("missing", ["features.npz", "ids.json"])
def test_a_missing_required_file_is_named(tmp_path: Path, missing: str) -> None:
    directory = write_build(tmp_path)
    (directory / missing).unlink()
    with pytest.raises(FileNotFoundError, match=re.escape(missing)):
        Catalog.load(directory)


def test_ids_that_disagree_with_the_features_fail_at_load(tmp_path: Path) -> None:
    directory = write_build(tmp_path)
    (directory / "ids.json").write_text(json.dumps({"users": ["a"], "items": ["b"]}))
    with pytest.raises(ValueError, match=r"ids\.json"):
        Catalog.load(directory)


def test_a_catalog_file_with_the_wrong_genre_count_is_named(tmp_path: Path) -> None:
    directory = write_build(tmp_path)
    (directory / "catalog.json").write_text(json.dumps({"genres": ["Action"]}))
    with pytest.raises(ValueError, match=r"catalog\.json.*genres"):
        Catalog.load(directory)


def test_a_seen_file_pointing_past_the_catalog_is_rejected(tmp_path: Path) -> None:
    directory = write_build(tmp_path, seen={0: [N_ITEMS]})
    with pytest.raises(ValueError, match=r"seen\.npz"):
        Catalog.load(directory)


def test_global_popularity_breaks_ties_by_index(tmp_path: Path) -> None:
    base = tables()
    features = FeatureTables(
        user_dense=base.user_dense,
        item_dense=base.item_dense,
        history=base.history,
        item_popularity=np.array([1, 5, 5, 0, 5, 1], dtype=np.float32),
        layout=base.layout,
    )
    catalog = Catalog.load(write_build(tmp_path, features=features))
    np.testing.assert_array_equal(catalog.popular, [1, 2, 4, 0, 5, 3])


@pytest.mark.parametrize(
    ("context", "source", "first"),
    [
        ({"gender": "F", "age": "22"}, "gender+age", 3),
        ({"gender": "f", "age": " 24 "}, "gender+age", 3),  # case and spaces, same bucket
        ({"gender": "M", "age": "31"}, "gender+age", 4),
        # (F, 30) has 5 users, under the minimum: the whole age bucket (mostly M) answers.
        ({"gender": "F", "age": "30"}, "age", 4),
        # No M user is 22: the age bucket answers before the gender.
        ({"gender": "M", "age": "22"}, "age", 3),
        ({"gender": "F", "age": "70"}, "gender", 3),
        ({"gender": "F", "age": "old"}, "gender", 3),
        ({"gender": "M"}, "gender", 4),
        ({"age": "22"}, "age", 3),
        ({"gender": "X", "age": "-3"}, "global", 0),
        ({"gender": "unknown"}, "global", 0),
        ({}, "global", 0),
    ],
)
def test_popular_for_falls_back_from_group_to_age_to_gender_to_global(
    full: Catalog, context: dict[str, str], source: str, first: int
) -> None:
    assert full.popular_source(context) == source
    ranking = full.popular_for(context, N_ITEMS)
    assert int(ranking[0]) == first
    assert sorted(ranking.tolist()) == list(range(N_ITEMS))


def test_group_ranking_orders_by_group_count_then_global_popularity(full: Catalog) -> None:
    # F of any age: 25 saw item 3, 5 saw item 5; the rest tie at 0 and follow global order.
    np.testing.assert_array_equal(full.popular_for({"gender": "F"}, N_ITEMS), [3, 5, 0, 1, 2, 4])


def test_small_groups_are_not_kept(full: Catalog) -> None:
    assert MIN_GROUP_USERS > 5
    assert ("F", 3) not in full.segments.group
    assert set(full.segments.group) == {("F", 2), ("M", 3)}


def test_popular_for_excludes_and_still_returns_k(full: Catalog) -> None:
    context = {"gender": "F", "age": "22"}
    np.testing.assert_array_equal(full.popular_for(context, 3), [3, 0, 1])
    excluded = full.popular_for(context, 3, exclude=np.array([3, 1], dtype=np.int64))
    np.testing.assert_array_equal(excluded, [0, 2, 4])
    everything = np.arange(N_ITEMS, dtype=np.int64)
    assert len(full.popular_for(context, 3, exclude=everything)) == 0


def test_popular_for_rejects_k_below_one(full: Catalog) -> None:
    with pytest.raises(ValueError, match="k"):
        full.popular_for({}, 0)


def test_indices_out_of_range_raise(full: Catalog) -> None:
    with pytest.raises(IndexError):
        full.seen(N_USERS)
    with pytest.raises(IndexError):
        full.genre_labels(-1)


def test_shared_arrays_are_read_only(full: Catalog) -> None:
    with pytest.raises(ValueError, match="read-only"):
        full.seen(0)[0] = 1
    with pytest.raises(ValueError, match="read-only"):
        full.popular_for({"gender": "F"}, 2)[0] = 1
    with pytest.raises(ValueError, match="read-only"):
        full.features.user_dense[0, 0] = 1.0
