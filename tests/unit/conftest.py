"""Fixtures shared by unit tests of more than one package."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from tests.unit.training.test_repository import build, open_repo


@pytest.fixture
def volume(tmp_path: Path) -> Path:
    """A canonical repository with two builds, alone in its parent as on a volume: no
    staging area beside it (what the readers must cope with)."""
    written = tmp_path / "build" / "model_repo"
    writer = open_repo(written)
    build(writer)
    build(writer)
    root = tmp_path / "volume" / "model_repo"
    shutil.copytree(written, root)
    return root
