"""Fixtures both process-starting tiers share (integration and e2e)."""

from __future__ import annotations

import hashlib
import os
import shutil
from pathlib import Path

import pytest

from training.build import BuildConfig, load_dataset, publish, train_all


@pytest.fixture(scope="session")
def movielens_repo(request: pytest.FixtureRequest) -> Path:
    """A real MovieLens-100k build with short training: the graph's tests need real titles,
    genres and demographics, not the exact quality of the full build.

    ``CASCADE_TEST_MOVIELENS_REPO`` names an existing build to reuse while iterating locally.
    """
    given = os.environ.get("CASCADE_TEST_MOVIELENS_REPO")
    if given:
        return Path(given)
    # Kept in pytest's cache, keyed by the training code, so the e2e session (its own pytest
    # run) reuses the build the integration session made.
    cache = getattr(request.config, "cache", None)  # None under -p no:cacheprovider
    name = f"movielens-{_training_digest()}"
    out = (
        cache.mkdir(name)
        if cache is not None
        else request.getfixturevalue("tmp_path_factory").mktemp(name)
    )
    done = out / "built"
    config = BuildConfig(
        dataset="movielens-100k",
        out=out / "model_repo",
        report_dir=out / "reports",
        retrieval_epochs=5,
        ranking_epochs=1,
        progress=False,
    )
    if not done.exists():
        shutil.rmtree(config.out, ignore_errors=True)
        publish(config, train_all(config, load_dataset(config)))
        done.touch()
    return config.out


def _training_digest() -> str:
    digest = hashlib.sha256()
    for path in sorted((Path(__file__).parent.parent / "training").rglob("*.py")):
        digest.update(path.read_bytes())
    return digest.hexdigest()[:16]
