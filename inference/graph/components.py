"""What one graph replica loads: the catalog, the feature store, the model runtime and the
stages over it, with the model versions resolved once so every response can name them."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

from inference import metrics
from inference.errors import InferenceError, ModelNotFound
from inference.graph.catalog import Catalog
from inference.graph.features import CachedFeatureStore, EmbeddedFeatureStore
from inference.graph.settings import GraphSettings
from inference.graph.stages import MODELS, USER_TOWER, ItemSearch, Ranker, RankJob, Retriever
from inference.runtime import ModelRuntime
from inference.triton.client import RetryPolicy, TritonClient
from training.repository import ModelRepository

log = logging.getLogger("cascade.inference")


@dataclass
class Components:
    catalog: Catalog
    features: CachedFeatureStore
    runtime: ModelRuntime
    retriever: Retriever
    ranker: Ranker | None
    versions: dict[str, int]

    def warm_up(self, candidates: int) -> None:
        """One call through each stage, so the first real request does not pay for fetching
        model configs and waking the backends (which would blow its budget). Failures are
        logged, not raised: a replica must start even while Triton is down, and degrade."""
        user = self.features.user(self.catalog.user_ids[0])
        if user is None:
            return
        try:
            found = self.retriever(user, candidates, 10.0)
            if self.ranker is not None:
                for _ in range(3):
                    self.ranker([RankJob(user, found)], 10.0)
        except InferenceError as exc:
            log.warning("warm-up failed (the graph will use fallbacks until it recovers): %s", exc)

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


def resolve_versions(repository: Path, pins: dict[str, int]) -> dict[str, int]:
    """The version of each graph model to serve: the pin, else the newest in the repository."""
    if not Path(repository).is_dir():  # ModelRepository would create it: a typo must fail
        raise ModelNotFound(f"model repository {repository} does not exist")
    repo = ModelRepository(repository)
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


def _count_model_error(model: str, exc: InferenceError) -> None:
    metrics.MODEL_ERRORS.labels(model=model, kind=type(exc).__name__).inc()


def load_components(settings: GraphSettings, *, with_ranker: bool) -> Components:
    config = settings.graph
    versions = resolve_versions(settings.repository, config.model_versions)
    directory = ModelRepository(settings.repository).version_dir(USER_TOWER, versions[USER_TOWER])
    catalog = Catalog.load(directory)

    def on_lookup(hit: bool) -> None:
        metrics.FEATURE_CACHE.labels(result="hit" if hit else "miss").inc()

    features = CachedFeatureStore(EmbeddedFeatureStore(catalog), config.cache, on_lookup=on_lookup)
    runtime: ModelRuntime
    if settings.runtime == "triton":
        # No retries: inside a 15-25 ms budget a retry only turns a fast fallback into a slow one.
        runtime = TritonClient(settings.triton_grpc, "grpc", retry=RetryPolicy(attempts=1))
    elif settings.runtime == "onnxruntime":
        from inference.local_runtime import OnnxRuntime

        runtime = OnnxRuntime(settings.repository, models=list(MODELS), versions=versions)
    else:
        raise InferenceError(f"runtime: {settings.runtime!r} is not 'triton' or 'onnxruntime'")
    metrics.record_runtime(runtime.kind)
    retriever = Retriever(runtime, ItemSearch(directory), versions)
    ranker = (
        Ranker(
            runtime,
            catalog,
            versions,
            on_model_error=_count_model_error,
            min_ranked=config.min_ranked,
        )
        if with_ranker
        else None
    )
    components = Components(catalog, features, runtime, retriever, ranker, versions)
    components.warm_up(config.candidates)
    return components
