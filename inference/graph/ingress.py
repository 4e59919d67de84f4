"""The graph's front replica: the in-process stages, the experiment split, and its routes.

Features, retrieval and re-rank run here, in the replica that took the request; ranking runs
batched either here too (``inline``) or in its own deployment, behind a handle. The
similar-items surface (:mod:`~inference.graph.similar`) runs here whole, on the base config
(experiments split recommendations only). The routes are
in :mod:`~inference.graph.rest_routes` (REST, a FastAPI app built per replica with this
replica's limits) and :mod:`~inference.graph.grpc_routes` (the Open Inference Protocol's
gRPC methods, which Serve calls on this class by name).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from fastapi import FastAPI
from ray import serve
from ray.serve.handle import DeploymentHandle

from ab_router.design import Catalog as ExperimentCatalog
from ab_router.events import EventStore
from ab_router.stores import open_store
from contract.graph_config import GraphConfig
from contract.names import SIMILAR_ITEMS
from inference import metrics
from inference.errors import InferenceError, ModelNotFound
from inference.graph.admission import Admission
from inference.graph.components import Components, load_components, resolve_versions
from inference.graph.experiments import CatalogWatcher, ExperimentRouter, read_catalog, report
from inference.graph.grpc_routes import GrpcRoutes
from inference.graph.guard import Limits
from inference.graph.ranking import RankingService
from inference.graph.recommender import Recommender, annotate
from inference.graph.rest_routes import build_api
from inference.graph.settings import GraphSettings
from inference.graph.similar import annotate as annotate_similar
from inference.graph.stages import RankJob, RankResult
from inference.graph.telemetry import attached, extract, traceparent, tracer
from inference.graph.types import (
    WARMUP_HEADER,
    RecommendRequest,
    RecommendResponse,
    SimilarRequest,
    SimilarResponse,
)
from inference.triton.passthrough import TritonPassThrough

log = logging.getLogger("cascade.inference")

#: The stages whose models the model server (Triton) runs; each has a fallback.
MODEL_SERVER_STAGES = ("retrieval", "ranking")

Rank = Callable[[RankJob, float, dict[str, str]], Awaitable[RankResult]]


class GraphIngress(GrpcRoutes):
    """HTTP and gRPC front of the graph; holds the in-process stages (features, retrieval,
    re-rank) and ranks inline or through a handle to the ranking deployment."""

    def __init__(self, ranking: DeploymentHandle[Any] | None, settings: GraphSettings) -> None:
        self.settings = settings
        self.config = settings.graph
        admission = self.config.admission
        self.limits = Limits(
            max_body_bytes=admission.max_body_bytes,
            admission=Admission(admission.max_in_flight),
            retry_after_s=admission.retry_after_s,
        )
        self.components: Components = load_components(settings, with_ranker=ranking is None)
        self._local_ranking: RankingService | None = None
        if ranking is None:
            self._local_ranking = RankingService(settings, self.components)
            self._rank: Rank = self._local_ranking.rank
        else:
            self._rank = _remote_rank(ranking)
        self._pool = ThreadPoolExecutor(16, thread_name_prefix="graph")
        self.passthrough = TritonPassThrough(settings.triton_http, settings.triton_grpc)
        self.recommender = self._recommender(self.config)
        self.similar = self.components.similar(
            self.config, self.components.versions, executor=self._pool
        )
        self.router: ExperimentRouter | None = None
        self.store: EventStore | None = None
        self.experiments: ExperimentCatalog | None = None
        self.variants: dict[str, Recommender] = {}
        self._watcher: CatalogWatcher | None = None
        if settings.experiments is not None:
            self.experiments = read_catalog(settings.experiments)
        if settings.event_store is not None:
            self.store = open_store(settings.event_store)
        if settings.experiment is not None:
            if settings.experiments is None or self.experiments is None:
                raise InferenceError("experiment: set, but no experiments file was given")
            router = ExperimentRouter(
                self.experiments, settings.experiment, self.config, self.store
            )
            self.router = router
            self.variants = {v: self._recommender(c) for v, c in router.configs.items()}
            self._watcher = CatalogWatcher(
                settings.experiments, lambda catalog: self._reload_experiments(router, catalog)
            )
        metrics.record_versions(self.components.versions)

    def __serve_build_asgi_app__(self) -> FastAPI:
        """This replica's REST application (Serve calls it once the replica is made)."""
        return build_api(self)

    def _reload_experiments(self, router: ExperimentRouter, catalog: ExperimentCatalog) -> None:
        """New weights of the served experiment (a canary step) take effect in place."""
        refused = router.update(catalog)
        if refused is not None:
            log.warning("experiments file changed; not applied: %s", refused)
            return
        self.experiments = catalog
        weights = {v.name: v.weight for v in router.experiment.variants}
        log.info("experiment %s now splits %s", router.experiment.name, weights)

    def _recommender(self, config: GraphConfig) -> Recommender:
        versions = (
            self.components.versions
            if config.model_versions == self.config.model_versions
            else resolve_versions(self.settings.repository, config.model_versions)
        )
        return self.components.recommender(config, versions, rank=self._rank, executor=self._pool)

    def is_graph(self, name: str) -> bool:
        """Whether ``name`` is one of the graph's own models, the recommender or the similar
        items (else a model passed through to Triton)."""
        return name == self.config.name or self.is_similar(name)

    def is_similar(self, name: str) -> bool:
        """Whether ``name`` is the graph's similar-items model."""
        return name == SIMILAR_ITEMS  # never the recommender's name (GraphConfig checks)

    async def answer(
        self, request: RecommendRequest, protocol: str, headers: dict[str, str]
    ) -> tuple[RecommendResponse, str]:
        """One recommendation, counted and traced; also returns the trace's ``traceparent``."""
        with (
            _counted(protocol) as labels,
            attached(extract(headers)),
            tracer().start_as_current_span("recommend", record_exception=False) as span,
        ):
            recommender, route = self.recommender, None
            if self.router is not None:
                route = self.router.route(request.user_id)
                labels["variant"] = route.variant or "none"
                recommender = self.variants.get(route.variant or "", self.recommender)
            response = await recommender.recommend(request)
            if self.router is not None and route is not None:
                response.assignment = route.assignment
                if route.variant is not None and headers.get(WARMUP_HEADER) != "1":
                    self.router.served(request.user_id, route.variant)
            annotate(response)
            return response, traceparent(span)

    async def answer_similar(
        self, request: SimilarRequest, protocol: str, headers: dict[str, str]
    ) -> tuple[SimilarResponse, str]:
        """Items similar to one item, counted and traced as :meth:`answer` is (experiments
        split recommendations only: the variant is always ``none``)."""
        with (
            _counted(protocol),
            attached(extract(headers)),
            tracer().start_as_current_span("similar", record_exception=False) as span,
        ):
            response = await self.similar.similar(request)
            annotate_similar(response)
            return response, traceparent(span)

    async def degraded(self) -> dict[str, str]:
        """The stages that serve their fallback now, and why (empty: none)."""
        loop = asyncio.get_running_loop()
        reason = await loop.run_in_executor(self._pool, self.components.readiness)
        if reason is None:
            return {}
        return {stage: f"model server: {reason}" for stage in MODEL_SERVER_STAGES}

    async def experiment_report(self, name: str) -> dict[str, Any]:
        """The experiment's analysis (decisions, effects, SRM, guardrails)."""
        if self.experiments is None or self.store is None:
            raise ModelNotFound("no experiments are configured (--experiments, --event-store)")
        catalog, store = self.experiments, self.store
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._pool, lambda: report(catalog, store, name))

    async def aclose(self) -> None:
        """Release what the replica holds: threads, connections, files, the event store.

        Run by the REST application's lifespan when Serve stops the replica.
        """
        if self._watcher is not None:
            self._watcher.close()
        await self.passthrough.close()
        if self._local_ranking is not None:
            self._local_ranking.close()
        self._pool.shutdown(wait=False, cancel_futures=True)
        if self.router is not None:
            self.router.close()  # flushes the exposures, then closes the store
        elif self.store is not None:
            self.store.close()
        self.components.close()


@contextlib.contextmanager
def _counted(protocol: str) -> Iterator[dict[str, str]]:
    """Count one request and time it, labelled with the status the client receives and the
    experiment variant (set it in the labels the block is given)."""
    start = time.perf_counter()
    labels = {"code": "200", "variant": "none"}
    try:
        yield labels
    except InferenceError as exc:
        labels["code"] = str(exc.status)
        raise
    except BaseException:
        labels["code"] = "500"  # what the client receives (see replies)
        raise
    finally:
        metrics.REQUESTS.labels(protocol=protocol, **labels).inc()
        metrics.REQUEST_SECONDS.labels(protocol=protocol, variant=labels["variant"]).observe(
            time.perf_counter() - start
        )


def _remote_rank(handle: DeploymentHandle[Any]) -> Rank:
    async def rank(job: RankJob, timeout_s: float, carrier: dict[str, str]) -> RankResult:
        result: RankResult = await handle.rank.remote(job, timeout_s, carrier)
        return result

    return rank


#: The deployment class: Serve routes HTTP to the app ``__serve_build_asgi_app__`` builds.
IngressView = serve.ingress()(GraphIngress)
