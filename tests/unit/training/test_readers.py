"""The loader: good files parse into typed tables; every kind of bad input names file/line/field."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from training.errors import DataError
from training.readers import read_dataset, read_items, read_users

INTERACTIONS = "user_id,item_id,rating,timestamp\nu1,i1,5,100\nu1,i2,2,200\nu2,i1,4,150\n"
ITEMS = "item_id\ttitle\tyear\tgenres\ni1\tOne\t1995\tAction|Comedy\ni2\tTwo\t\tDrama\n"
USERS = "user_id,age,gender,occupation,zip_code\nu1,24,M,writer,12345\nu2,53,F,,99999\n"


def write(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def test_reads_csv_and_tsv_into_typed_tables(tmp_path: Path) -> None:
    ds = read_dataset(
        write(tmp_path, "inter.csv", INTERACTIONS),
        write(tmp_path, "items.tsv", ITEMS),
        write(tmp_path, "users.csv", USERS),
    )
    assert ds.items.ids == ["i1", "i2"]
    assert ds.items.genre_vocab == ["Action", "Comedy", "Drama"]
    assert ds.items.genres.tolist() == [[True, True, False], [False, False, True]]
    assert ds.items.year.tolist() == [1995, 0]
    assert ds.users.age.tolist() == [24, 53]
    assert ds.users.occupation_vocab[ds.users.occupation[1]] == "unknown"
    assert ds.interactions.user.tolist() == [0, 0, 1]
    assert ds.interactions.item.tolist() == [0, 1, 0]
    assert ds.interactions.rating.dtype == np.float32
    assert ds.interactions.timestamp.tolist() == [100, 200, 150]
    assert len(ds.sha256) == 64


def test_without_side_files_ids_come_from_interactions(tmp_path: Path) -> None:
    ds = read_dataset(write(tmp_path, "inter.csv", INTERACTIONS))
    assert ds.users.ids == ["u1", "u2"]
    assert ds.items.ids == ["i1", "i2"]
    assert ds.items.genres.shape == (2, 1)


def test_missing_rating_column_means_implicit_positives(tmp_path: Path) -> None:
    path = write(tmp_path, "inter.csv", "user_id,item_id,timestamp\na,b,1\n")
    assert read_dataset(path).interactions.rating.tolist() == [5.0]


def test_recbole_headers_and_space_separated_genres(tmp_path: Path) -> None:
    text = "item_id:token\tmovie_title:token_seq\trelease_year:token\tclass:token_seq\n"
    text += "1\tToy Story\t1995\tAnimation Children's Comedy\n"
    items = read_items(write(tmp_path, "x.item", text))
    assert items.title == ["Toy Story"]
    assert items.genre_vocab == ["Animation", "Children's", "Comedy"]


def test_missing_file_is_named(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="file not found") as info:
        read_dataset(tmp_path / "absent.csv")
    assert info.value.path is not None
    assert info.value.path.endswith("absent.csv")


def test_truncated_file_names_last_line(tmp_path: Path) -> None:
    path = write(tmp_path, "inter.csv", INTERACTIONS + "u2,i2,")
    with pytest.raises(DataError, match="truncated") as info:
        read_dataset(path)
    assert info.value.line == 5


def test_short_row_names_line(tmp_path: Path) -> None:
    path = write(tmp_path, "inter.csv", INTERACTIONS + "u2,i2\n")
    with pytest.raises(DataError, match="expected 4 fields, found 2") as info:
        read_dataset(path)
    assert info.value.line == 5


def test_malformed_number_names_line_and_field(tmp_path: Path) -> None:
    path = write(tmp_path, "inter.csv", INTERACTIONS.replace("u2,i1,4,150", "u2,i1,four,150"))
    with pytest.raises(DataError) as info:
        read_dataset(path)
    assert (info.value.line, info.value.field) == (4, "rating")
    assert "inter.csv, line 4, field 'rating': not a number: 'four'" in str(info.value)


def test_fractional_timestamp_is_rejected(tmp_path: Path) -> None:
    path = write(tmp_path, "inter.csv", INTERACTIONS.replace("150", "150.5"))
    with pytest.raises(DataError, match="not an integer") as info:
        read_dataset(path)
    assert info.value.field == "timestamp"


def test_missing_required_column(tmp_path: Path) -> None:
    path = write(tmp_path, "inter.csv", "user_id,rating,timestamp\nu1,5,1\n")
    with pytest.raises(DataError, match="required column missing") as info:
        read_dataset(path)
    assert (info.value.line, info.value.field) == (1, "item_id")


def test_unknown_item_id_names_the_items_file(tmp_path: Path) -> None:
    items = write(tmp_path, "items.tsv", ITEMS)
    path = write(tmp_path, "inter.csv", INTERACTIONS + "u2,i9,3,300\n")
    with pytest.raises(DataError, match="unknown id 'i9'") as info:
        read_dataset(path, items=items)
    assert (info.value.line, info.value.field) == (5, "item_id")
    assert "items.tsv" in str(info.value)


def test_unknown_user_id(tmp_path: Path) -> None:
    users = write(tmp_path, "users.csv", USERS)
    path = write(tmp_path, "inter.csv", INTERACTIONS + "u7,i1,3,300\n")
    with pytest.raises(DataError, match="unknown id 'u7'") as info:
        read_dataset(path, users=users)
    assert info.value.field == "user_id"


def test_duplicate_item_id(tmp_path: Path) -> None:
    path = write(tmp_path, "items.tsv", ITEMS + "i1\tAgain\t2000\tDrama\n")
    with pytest.raises(DataError, match="duplicate id 'i1'") as info:
        read_items(path)
    assert info.value.line == 4


def test_out_of_range_age(tmp_path: Path) -> None:
    path = write(tmp_path, "users.csv", USERS.replace(",53,", ",530,"))
    with pytest.raises(DataError, match="out of range") as info:
        read_users(path)
    assert (info.value.line, info.value.field) == (3, "age")


def test_empty_and_header_only_files(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="empty"):
        read_dataset(write(tmp_path, "a.csv", ""))
    with pytest.raises(DataError, match="no interactions"):
        read_dataset(write(tmp_path, "b.csv", "user_id,item_id,timestamp\n"))


def test_binary_garbage_is_a_data_error(tmp_path: Path) -> None:
    path = tmp_path / "inter.csv"
    path.write_bytes(b"user_id,item_id,timestamp\n\xff\xfe\x00garbage\n")
    with pytest.raises(DataError, match="UTF-8") as info:
        read_dataset(path)
    assert info.value.line == 2


def test_lenient_year_reads_bad_year_as_unknown(tmp_path: Path) -> None:
    path = write(tmp_path, "items.tsv", ITEMS.replace("1995", "V"))
    with pytest.raises(DataError, match="year"):
        read_items(path)
    assert read_items(path, lenient_year=True).year.tolist() == [0, 0]
