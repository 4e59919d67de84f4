"""One small real build per test session, shared by the factory's integration tests."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from inference.triton.server import TritonServer
from training.build import BuildConfig, BuildResult, Trained, load_dataset, publish, train_all
from training.synthetic import SyntheticConfig

SMALL = SyntheticConfig(n_users=1000, n_items=400, interactions_per_user=30, seed=7)


def small_config(out: Path, **overrides: object) -> BuildConfig:
    """A build small enough for CI (seconds), on synthetic data with real signal."""
    values: dict[str, object] = {
        "dataset": "synthetic",
        "synthetic": SMALL,
        "out": out / "model_repo",
        "report_dir": out / "reports",
        "retrieval_epochs": 10,
        "ranking_epochs": 3,
        "candidates": 200,
        "progress": False,
    }
    values.update(overrides)
    return BuildConfig.model_validate(values)


SmallConfig = Callable[..., BuildConfig]


@pytest.fixture(name="small_config", scope="session")
def small_config_fixture() -> SmallConfig:
    return small_config


@pytest.fixture(scope="session")
def trained(tmp_path_factory: pytest.TempPathFactory) -> tuple[BuildConfig, Trained]:
    config = small_config(tmp_path_factory.mktemp("build"))
    return config, train_all(config, load_dataset(config))


@pytest.fixture(scope="session")
def built(trained: tuple[BuildConfig, Trained]) -> tuple[BuildConfig, BuildResult]:
    config, models = trained
    return config, publish(config, models)


@pytest.fixture(scope="session")
def built_repo(built: tuple[BuildConfig, BuildResult]) -> Path:
    """A canonical repository with the four models (a small synthetic build)."""
    return built[0].out


@pytest.fixture(scope="session")
def triton(built_repo: Path) -> Iterator[TritonServer]:
    """One real tritonserver per test session, serving ``built_repo`` through the shim."""
    with TritonServer(built_repo) as server:
        yield server
