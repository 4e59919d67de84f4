"""What one graph replica loads: the model runtime, the stages over it and, for every user
tower version the graph serves (the base config's and each experiment variant's), that
version's catalog, features, item index and similar-items neighbours, with the model versions
resolved once so every response can name them."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from contract.errors import RepositoryError
from contract.graph_config import GraphConfig
from contract.names import COMBINER, MODELS, RANKERS, USER_TOWER
from contract.ranking import PRERANKER_FILE, RANKING, Preranker, graph_models
from contract.repository import RepositoryReader
from inference import metrics
from inference.errors import InferenceError, ModelNotFound
from inference.graph.artifacts import TowerArtifactCache, TowerArtifacts, VersionCache
from inference.graph.catalog import Catalog
from inference.graph.experiments import find_experiment, read_catalog, variant_configs
from inference.graph.features import CachedFeatureStore
from inference.graph.item_item import ItemItemScores
from inference.graph.neighbours import Neighbours
from inference.graph.recommender import RankFn, Recommender
from inference.graph.settings import GraphSettings
from inference.graph.similar import SimilarItems
from inference.graph.stages import Ranker, RankJob, Retriever
from inference.runtime import ModelRuntime
from inference.triton.client import RetryPolicy, TritonClient

log = logging.getLogger("cascade.inference")


@dataclass
class Components:
    towers: TowerArtifactCache
    runtime: ModelRuntime
    ranker: Ranker | None
    #: The base config's model versions.
    versions: dict[str, int]
    #: The resolved versions of every config served (the base's first); warmed up at start.
    served: list[dict[str, int]] = field(default_factory=list)
    #: Per user tower version, its similar-items neighbours (None: it has none); None here:
    #: similar items come from the embeddings alone.
    neighbours: VersionCache[Neighbours | None] | None = None

    def tower(self, versions: Mapping[str, int] | None = None) -> TowerArtifacts:
        """The artifacts of the user tower version in ``versions`` (default: the base's)."""
        return self.towers.get((versions or self.versions)[USER_TOWER])

    def recommender(
        self,
        config: GraphConfig,
        versions: dict[str, int],
        *,
        rank: RankFn,
        executor: ThreadPoolExecutor | None = None,
    ) -> Recommender:
        """A recommender for ``config`` serving ``versions``, over the catalog, features and
        item index of their user tower version: a variant's canary searches its own index."""
        tower = self.tower(versions)
        return Recommender(
            config=config,
            catalog=tower.catalog,
            features=tower.features,
            retriever=tower.retriever,
            rank=rank,
            versions=versions,
            executor=executor,
        )

    def similar(
        self,
        config: GraphConfig,
        versions: dict[str, int],
        *,
        executor: ThreadPoolExecutor | None = None,
    ) -> SimilarItems:
        """The similar-items surface for ``config``, over the catalog, item embeddings and
        neighbours of the user tower version in ``versions``."""
        tower = self.tower(versions)
        return SimilarItems(
            config=config,
            catalog=tower.catalog,
            features=tower.features,
            search=tower.retriever.search,
            neighbours=self.similar_neighbours(versions[USER_TOWER]),
            versions=versions,
            executor=executor,
        )

    def similar_neighbours(self, version: int) -> Neighbours | None:
        """The neighbours of user tower ``version``; None when it has none or they cannot be
        read (logged: the surface still answers, from the embeddings)."""
        if self.neighbours is None:
            return None
        try:
            return self.neighbours.get(version)
        except InferenceError as exc:
            log.warning("similar items are served from the embeddings only: %s", exc)
            return None

    @property
    def catalog(self) -> Catalog:
        return self.tower().catalog

    @property
    def features(self) -> CachedFeatureStore:
        return self.tower().features

    @property
    def retriever(self) -> Retriever:
        return self.tower().retriever

    def warm_up(self, candidates: int) -> None:
        """One call through each stage for every served set of versions, so the first real
        request does not pay for fetching model configs and waking the backends (which would
        blow its budget). Failures are logged, not raised: a replica must start even while
        Triton is down, and degrade."""
        for versions in self.served or [self.versions]:
            tower = self.tower(versions)
            user = tower.features.user(tower.catalog.user_ids[0])
            if user is None:
                continue
            try:
                found = tower.retriever(user, candidates, 10.0, versions)
                if self.ranker is not None:
                    for _ in range(3):
                        self.ranker([RankJob(user, found, versions)], 10.0)
            except InferenceError as exc:
                log.warning(
                    "warm-up of %s failed (the graph will use fallbacks until it recovers): %s",
                    versions,
                    exc,
                )

    def close(self) -> None:
        if self.ranker is not None:
            self.ranker.close()
        self.runtime.close()

    def readiness(self) -> str | None:
        """None when the models can be served, else why not."""
        probe = getattr(self.runtime, "readiness", None)
        if not callable(probe):
            return None
        reason: str | None = probe(1.0)
        return reason


def open_repository(repository: Path) -> RepositoryReader:
    """The model repository, for reading only (in a pod it is a read-only volume)."""
    try:
        return RepositoryReader(repository)
    except RepositoryError as exc:  # a typo must fail, not serve nothing
        raise ModelNotFound(f"model repository {repository} does not exist") from exc


def resolve_versions(repository: Path, pins: Mapping[str, int]) -> dict[str, int]:
    """The version of each graph model to serve: the pin, else the newest in the repository."""
    repo = open_repository(repository)
    versions: dict[str, int] = {}
    for model in MODELS:
        available = repo.versions(model)
        if model in pins:
            if pins[model] not in available:
                raise InferenceError(
                    f"model_versions: {model} version {pins[model]} is not in {repository} "
                    f"(has {available})"
                )
            versions[model] = pins[model]
        elif not available:
            raise InferenceError(f"{repository} has no version of {model}; run `cascade build`")
        else:
            versions[model] = max(available)
    return versions


def one_call_version(repo: RepositoryReader, versions: Mapping[str, int]) -> int | None:
    """The one-call ranking model's version composed of exactly the rankers and combiner in
    ``versions``, with the user tower version's item table; None when there is none (a
    canary of one ranker, an older build)."""
    version = versions.get(COMBINER)
    if version is None or version not in repo.versions(RANKING):
        return None
    try:
        composed = repo.manifest(RANKING, version).get("composed_of", {})
    except RepositoryError:
        return None
    wanted = {name: versions.get(name) for name in (*RANKERS, COMBINER, USER_TOWER)}
    return version if composed == wanted else None


def served_pins(settings: GraphSettings) -> list[dict[str, int]]:
    """The model pins of every config the graph serves: the base config's first, then each
    variant's of the experiment splitting its traffic (a variant may pin other versions)."""
    pins = [dict(settings.graph.model_versions)]
    if settings.experiments is None or settings.experiment is None:
        return pins
    design = find_experiment(read_catalog(settings.experiments), settings.experiment)
    configs = variant_configs(design, settings.graph)
    return pins + [dict(config.model_versions) for config in configs.values()]


def _preranker(directory: Path) -> Preranker | None:
    """The pre-ranker beside a combiner version; None (rank every candidate) without one."""
    path = directory / PRERANKER_FILE
    return Preranker.load(path) if path.is_file() else None


def _count_model_error(model: str, exc: InferenceError) -> None:
    metrics.MODEL_ERRORS.labels(model=model, kind=type(exc).__name__).inc()


def _count_lookup(hit: bool) -> None:
    metrics.FEATURE_CACHE.labels(result="hit" if hit else "miss").inc()


def _make_runtime(settings: GraphSettings, versions: Mapping[str, int]) -> ModelRuntime:
    if settings.runtime == "triton":
        # No retries: inside a 15-25 ms budget a retry only turns a fast fallback into a slow one.
        return TritonClient(settings.triton_grpc, "grpc", retry=RetryPolicy(attempts=1))
    if settings.runtime == "onnxruntime":
        from inference.local_runtime import OnnxRuntime

        models = graph_models(open_repository(settings.repository))
        return OnnxRuntime(settings.repository, models=models, versions=versions)
    raise InferenceError(f"runtime: {settings.runtime!r} is not 'triton' or 'onnxruntime'")


def load_components(
    settings: GraphSettings, *, with_ranker: bool, runtime: ModelRuntime | None = None
) -> Components:
    """Everything a replica serves from. ``runtime``: one already made (the components own
    it from here on); None makes the one ``settings.runtime`` names."""
    config = settings.graph
    served: list[dict[str, int]] = []
    for pins in served_pins(settings):
        resolved = resolve_versions(settings.repository, pins)
        if resolved not in served:
            served.append(resolved)
    versions = served[0]
    repo = open_repository(settings.repository)
    if runtime is None:
        runtime = _make_runtime(settings, versions)
    metrics.record_runtime(runtime.kind)

    item_item = VersionCache(
        lambda version: ItemItemScores.load(repo.version_dir(COMBINER, version)),
        model=COMBINER,
        what="its item-item weights",
    )

    def load(version: int) -> TowerArtifacts:
        # One feature cache per version, sized by the base config: variants share it.
        directory = repo.version_dir(USER_TOWER, version)
        return TowerArtifacts.load(
            directory, version, runtime, config.cache, _count_lookup, item_item.get
        )

    prerankers = VersionCache(
        lambda version: _preranker(repo.version_dir(COMBINER, version)),
        model=COMBINER,
        what="its pre-ranker",
    )
    one_call: dict[tuple[tuple[str, int], ...], int | None] = {}

    def one_call_for(versions: Mapping[str, int]) -> int | None:
        key = tuple(sorted(versions.items()))
        if key not in one_call:
            one_call[key] = one_call_version(repo, versions)
        return one_call[key]

    towers = TowerArtifactCache(load)
    try:
        for resolved in served:  # at start, not on a variant's first request
            towers.get(resolved[USER_TOWER])
    except BaseException:
        runtime.close()
        raise
    ranker = (
        Ranker(
            runtime,
            towers.catalog(versions[USER_TOWER]),
            versions,
            on_model_error=_count_model_error,
            min_ranked=config.min_ranked,
            catalogs=towers.catalog,
            item_item=item_item.get,
            prerankers=prerankers.get,
            head=config.ranking_head,
            one_call=one_call_for,
        )
        if with_ranker
        else None
    )
    neighbours: VersionCache[Neighbours | None] = VersionCache(
        lambda version: Neighbours.load(
            repo.version_dir(USER_TOWER, version), towers.catalog(version).n_items
        ),
        model=USER_TOWER,
        what="its similar-items neighbours",
    )
    components = Components(towers, runtime, ranker, versions, served, neighbours)
    components.warm_up(config.candidates)
    return components
