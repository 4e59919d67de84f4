"""What a replica loads, on a hand-made repository with two user tower versions whose catalog
features and item embeddings differ: each experiment variant must retrieve from and rank over
its own user tower version's artifacts, loaded once per version. No Ray, no Triton: the
models run on the fake runtime of the stage tests."""

from __future__ import annotations

import asyncio
import dataclasses
import json
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from contract.graph_config import CacheConfig, GraphConfig, RerankConfig, StageBudgets
from contract.names import COMBINER, RANKERS, USER_TOWER
from inference.errors import InferenceError, ModelNotFound
from inference.graph.artifacts import TowerArtifactCache, TowerArtifacts
from inference.graph.components import Components, load_components, resolve_versions
from inference.graph.settings import GraphSettings
from inference.graph.stages import RankJob, RankResult
from inference.graph.types import RecommendRequest
from tests.unit.inference.graph.test_catalog import tables
from tests.unit.inference.graph.test_stages import EMBEDDINGS, FakeRuntime, build_dir

#: Version 2 swaps the embedding columns: the fake tower's query [1, 0] then ranks items by
#: the old second column, 5, 2, 3, 4, 0, 1 (item 1 is the one u0 has seen).
V2_EMBEDDINGS = np.ascontiguousarray(EMBEDDINGS[:, ::-1])
#: Column 0 of the item features tells the versions apart in the rankers' feed.
ITEM_MARK = {1: 7.0, 2: 8.0}
EXPERIMENT = "tower-canary"
ROOMY = StageBudgets(retrieval_ms=2000, ranking_ms=2000, rerank_ms=500, total_ms=5000)
BASE = GraphConfig(
    candidates=6,
    max_k=5,
    default_k=3,
    budgets=ROOMY,
    rerank=RerankConfig(mmr_lambda=1.0),
    model_versions={USER_TOWER: 1},
)


def write_repository(root: Path) -> Path:
    """user_tower 1 and 2 with their artifacts; one (empty) version of every other model:
    resolving versions reads directory names only."""
    base = tables()
    for version, embeddings in ((1, EMBEDDINGS), (2, V2_EMBEDDINGS)):
        item_dense = base.item_dense.copy()
        item_dense[:, 0] = ITEM_MARK[version]
        features = dataclasses.replace(base, item_dense=item_dense)
        directory = root / USER_TOWER / str(version)
        build_dir(directory, embeddings)
        features.save(directory / "features.npz")
    for model in (*RANKERS, COMBINER):
        (root / model / "1").mkdir(parents=True)
    return root


def write_experiments(path: Path, *variant_pins: dict[str, int]) -> Path:
    """An experiment whose variant ``v<i>`` pins ``variant_pins[i]`` (control pins nothing)."""
    weight = 100 / (len(variant_pins) + 1)
    variants: list[dict[str, Any]] = [{"name": "control", "weight": weight, "config": {}}]
    variants += [
        {"name": f"v{i}", "weight": weight, "config": {"model_versions": pins}}
        for i, pins in enumerate(variant_pins)
    ]
    design = {
        "layers": [
            {
                "name": "default",
                "experiments": [{"name": EXPERIMENT, "status": "running", "variants": variants}],
            }
        ]
    }
    path.write_text(json.dumps(design))
    return path


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    return write_repository(tmp_path / "model_repo")


@pytest.fixture
def runtime() -> FakeRuntime:
    return FakeRuntime()


@pytest.fixture
def components(repo: Path, tmp_path: Path, runtime: FakeRuntime) -> Iterator[Components]:
    settings = GraphSettings(
        repository=repo,
        graph=BASE,
        experiments=write_experiments(tmp_path / "experiments.json", {USER_TOWER: 2}),
        experiment=EXPERIMENT,
    )
    loaded = load_components(settings, with_ranker=True, runtime=runtime)
    yield loaded
    loaded.close()


@pytest.fixture
def executor() -> Iterator[ThreadPoolExecutor]:
    pool = ThreadPoolExecutor(2, thread_name_prefix="test-components")
    yield pool
    pool.shutdown(wait=True)


def versions_of(repo: Path, tower: int) -> dict[str, int]:
    return resolve_versions(repo, {USER_TOWER: tower})


def test_every_variants_user_tower_version_is_loaded_at_start(
    components: Components, runtime: FakeRuntime
) -> None:
    assert components.towers.versions == [1, 2]
    assert [v[USER_TOWER] for v in components.served] == [1, 2]
    # Warm-up ran each served version's user tower, not only the base's.
    assert {c.version for c in runtime.calls_of(USER_TOWER)} == {1, 2}


def test_each_version_searches_its_own_item_embeddings(components: Components, repo: Path) -> None:
    old, new = components.tower(versions_of(repo, 1)), components.tower(versions_of(repo, 2))
    assert old is components.tower() is not new
    np.testing.assert_array_equal(old.retriever.search.embeddings, EMBEDDINGS)
    np.testing.assert_array_equal(new.retriever.search.embeddings, V2_EMBEDDINGS)
    assert old.catalog is not new.catalog
    assert new.catalog.features.item_dense[0, 0] == ITEM_MARK[2]
    user = new.features.user("u0")
    assert user is not None
    np.testing.assert_array_equal(new.retriever(user, 3).items, [5, 2, 3])
    np.testing.assert_array_equal(old.retriever(user, 3).items, [4, 2, 3])


def test_variants_pinning_one_version_share_its_artifacts(
    repo: Path, tmp_path: Path, runtime: FakeRuntime
) -> None:
    experiments = write_experiments(
        tmp_path / "shared.json", {USER_TOWER: 2}, {USER_TOWER: 2, COMBINER: 1}
    )
    settings = GraphSettings(
        repository=repo, graph=BASE, experiments=experiments, experiment=EXPERIMENT
    )
    components = load_components(settings, with_ranker=False, runtime=runtime)
    try:
        assert components.towers.versions == [1, 2]
        assert components.tower({USER_TOWER: 2}) is components.tower(versions_of(repo, 2))
    finally:
        components.close()


def test_a_variants_recommender_retrieves_and_ranks_over_its_own_version(
    components: Components, repo: Path, runtime: FakeRuntime, executor: ThreadPoolExecutor
) -> None:
    """End to end through the orchestrator: the canary's candidates come from version 2's
    index and the rankers read version 2's item features, in one replica that also serves
    version 1 to control."""
    ranker = components.ranker
    assert ranker is not None
    jobs: list[RankJob] = []

    async def rank(job: RankJob, timeout_s: float, carrier: dict[str, str]) -> RankResult:
        jobs.append(job)
        return ranker([job], timeout_s)[0]

    def recommend(tower: int) -> tuple[list[int], float]:
        """The candidates retrieval handed to ranking, and the item features ranking read."""
        versions = versions_of(repo, tower)
        config = BASE.with_overrides({"model_versions": {USER_TOWER: tower}})
        recommender = components.recommender(config, versions, rank=rank, executor=executor)
        runtime.calls.clear()
        jobs.clear()
        response = asyncio.run(recommender.recommend(RecommendRequest(user_id="u0", k=3)))
        assert response.fallbacks == []
        assert response.model_versions[USER_TOWER] == tower
        assert {c.version for c in runtime.calls_of(USER_TOWER)} == {tower}
        [job] = jobs
        [call] = runtime.calls_of(RANKERS[0])
        marks = set(call.inputs["item_dense"][:, 0].tolist())
        assert len(marks) == 1
        return job.candidates.items.tolist(), marks.pop()

    assert recommend(1) == ([4, 2, 3, 5, 0], ITEM_MARK[1])
    assert recommend(2) == ([5, 2, 3, 4, 0], ITEM_MARK[2])


def test_a_batch_mixing_versions_ranks_each_over_its_own_catalog(
    components: Components, repo: Path, runtime: FakeRuntime
) -> None:
    ranker = components.ranker
    assert ranker is not None
    jobs = []
    for tower in (1, 2):
        versions = versions_of(repo, tower)
        artifacts = components.tower(versions)
        user = artifacts.features.user("u0")
        assert user is not None
        jobs.append(RankJob(user, artifacts.retriever(user, 3), versions))
    runtime.calls.clear()
    ranker(jobs)
    marks = [float(c.inputs["item_dense"][0, 0]) for c in runtime.calls_of(RANKERS[0])]
    assert sorted(marks) == [ITEM_MARK[1], ITEM_MARK[2]]


def test_the_cache_loads_each_version_once(repo: Path, runtime: FakeRuntime) -> None:
    loads: list[int] = []

    def load(version: int) -> TowerArtifacts:
        loads.append(version)
        directory = repo / USER_TOWER / str(version)
        return TowerArtifacts.load(directory, version, runtime, CacheConfig())

    cache = TowerArtifactCache(load)
    with ThreadPoolExecutor(4) as pool:
        found = list(pool.map(cache.get, [2, 1, 2, 2, 1]))
    assert sorted(loads) == [1, 2]
    assert found[0] is found[2] is found[3] is cache.get(2)
    assert cache.catalog(1) is found[1].catalog


def test_a_version_without_its_artifacts_fails_naming_it(repo: Path, runtime: FakeRuntime) -> None:
    (repo / USER_TOWER / "3").mkdir()

    def load(version: int) -> TowerArtifacts:
        directory = repo / USER_TOWER / str(version)
        return TowerArtifacts.load(directory, version, runtime, CacheConfig())

    with pytest.raises(InferenceError, match=r"user_tower: version 3: .*features\.npz"):
        TowerArtifactCache(load).get(3)


def test_a_missing_repository_is_not_created(tmp_path: Path) -> None:
    missing = tmp_path / "no-such-repo"
    with pytest.raises(ModelNotFound, match="does not exist"):
        resolve_versions(missing, {})
    assert not missing.exists()
    assert list(tmp_path.iterdir()) == []
