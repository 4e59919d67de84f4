"""Fixtures both process-starting tiers share (integration and e2e)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from training.build import BuildConfig, load_dataset, publish, train_all


@pytest.fixture(scope="session")
def movielens_repo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A real MovieLens-100k build with short training: the graph's tests need real titles,
    genres and demographics, not the exact quality of the full build.

    ``CASCADE_TEST_MOVIELENS_REPO`` names an existing build to reuse while iterating locally.
    """
    given = os.environ.get("CASCADE_TEST_MOVIELENS_REPO")
    if given:
        return Path(given)
    out = tmp_path_factory.mktemp("movielens")
    config = BuildConfig(
        dataset="movielens-100k",
        out=out / "model_repo",
        report_dir=out / "reports",
        retrieval_epochs=5,
        ranking_epochs=1,
        progress=False,
    )
    publish(config, train_all(config, load_dataset(config)))
    return config.out
