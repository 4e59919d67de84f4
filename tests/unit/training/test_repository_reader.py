"""Reading the model repository never writes: serving pods mount it read-only and run with a
read-only root filesystem. The writer (the build) keeps staging and recovery to itself."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

import training.repository as repository
from contract.cli import main as cascade
from contract.errors import RepositoryError
from contract.repository import RepositoryReader
from tests.readonly import read_only_view
from tests.unit.training.test_repository import build, open_repo, snapshot
from training.repository import ModelRepository

MODELS = ["ranker", "retriever"]
ROWS = [("ranker", 1), ("ranker", 2), ("retriever", 1), ("retriever", 2)]


def read_everything(reader: RepositoryReader) -> None:
    assert reader.models() == MODELS
    for model in MODELS:
        assert reader.versions(model) == [1, 2]
        assert reader.config(model).name == model
        assert reader.manifest(model, 2)["version"] == 2
        assert (reader.version_dir(model, 1) / "model.onnx").is_file()
    rows = reader.list_registry()
    assert [(r["model"], r["version"]) for r in rows] == ROWS
    assert all(r["served"] and "error" not in r for r in rows)  # serve_latest=2: both


def test_reading_leaves_the_repository_and_its_parent_untouched(volume: Path) -> None:
    before = snapshot(volume.parent)
    read_everything(RepositoryReader(volume))
    assert snapshot(volume.parent) == before
    assert not (volume.parent / ".model_repo-staging").exists()


def test_a_read_only_repository_can_be_read(volume: Path, tmp_path: Path) -> None:
    with read_only_view(volume.parent, tmp_path / "ro") as view:
        read_everything(RepositoryReader(view / "model_repo"))
        # The view really refuses writes, to root too: the writer cannot open it.
        with pytest.raises(RepositoryError, match="Read-only file system"):
            ModelRepository(view / "model_repo")


def test_cascade_models_lists_a_read_only_repository(
    volume: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with read_only_view(volume.parent, tmp_path / "ro") as view:
        assert cascade(["models", "--repo", str(view / "model_repo"), "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert [(r["model"], r["version"]) for r in rows] == ROWS


def test_a_missing_root_is_an_error_and_is_not_created(tmp_path: Path) -> None:
    with pytest.raises(RepositoryError, match="no model repository"):
        RepositoryReader(tmp_path / "typo")
    assert list(tmp_path.iterdir()) == []


def test_an_interrupted_commit_is_left_to_the_writer(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A reader shows what is published and does not recover; the next writer does."""
    root = tmp_path / "model_repo"
    writer = open_repo(root)
    build(writer)
    real_move = repository._move
    calls: list[Path] = []

    def failing_move(src: Path, dst: Path) -> None:
        calls.append(dst)
        if len(calls) == 2:
            raise OSError("disk vanished")
        real_move(src, dst)

    monkeypatch.setattr(repository, "_move", failing_move)
    with pytest.raises(RepositoryError, match="interrupted after its journal"):
        build(writer)
    monkeypatch.setattr(repository, "_move", real_move)
    before = snapshot(tmp_path)

    reader = RepositoryReader(root)
    assert (reader.versions("ranker"), reader.versions("retriever")) == ([1, 2], [1])
    assert snapshot(tmp_path) == before

    open_repo(root)  # the writer rolls the journaled build forward
    assert reader.versions("retriever") == [1, 2]
