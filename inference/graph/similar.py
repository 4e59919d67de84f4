"""The graph's second surface: items similar to one item, for "more like this" shelves.

Candidates are the query item's co-occurrence neighbours (:mod:`~inference.graph.neighbours`)
and the items nearest to it by embedding, scored by the rule the build's offline evaluation
scores them with (:func:`contract.similar.similar_scores`: neighbours first, in weight order,
then the embeddings' order), then re-ranked by the graph's policy (deny list, business rules,
MMR) as recommendations are. The query item and, when a known user is named, the items that
user has seen are never answered.

One stage under its own budget (``budgets.similar_ms``), run off the event loop. Fallbacks:
a user tower version without neighbours (or with a file that cannot be read) answers from the
embeddings alone ("similar:embeddings"); a stage that fails or misses its budget answers
popular items ("similar:popular"). An item the catalog does not know gets popular items with
``known_item: false`` ("cold_start"), not an error.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

import numpy as np
from opentelemetry import trace

from contract.arrays import FloatArray, IntArray
from contract.graph_config import GraphConfig
from contract.names import USER_TOWER
from contract.similar import similar_scores
from inference import metrics
from inference.errors import BadRequest, InferenceError
from inference.graph.catalog import Catalog
from inference.graph.deadline import Deadline
from inference.graph.features import FeatureStore
from inference.graph.neighbours import Neighbours
from inference.graph.rerank import rerank, resolve_deny
from inference.graph.stage_runner import StageRunner
from inference.graph.stages import ItemSearch
from inference.graph.telemetry import set_attributes
from inference.graph.types import SimilarRequest, SimilarResponse

_EMPTY: IntArray = np.zeros(0, dtype=np.int64)
_EMPTY.setflags(write=False)


def score_candidates(
    query: int,
    neighbours: tuple[IntArray, FloatArray] | None,
    embedded: IntArray,
    embeddings: FloatArray,
    exclude: IntArray,
) -> tuple[IntArray, FloatArray]:
    """The candidates for ``query``, best first, with their scores.

    ``neighbours``: the query's neighbours and weights (None: the version has none);
    ``embedded``: items found by the query's embedding. The candidates are both sets, less
    ``query`` and ``exclude``, scored by :func:`~contract.similar.similar_scores` from their
    neighbour weight (0 for items found by embedding only) and their embedding's inner
    product with the query's (the embeddings are L2-normalised: it is the cosine, as the
    offline evaluation computes it). Ties keep the lower item index first.
    """
    found = np.asarray(embedded, dtype=np.int64)
    pool = np.unique(found) if neighbours is None else np.union1d(neighbours[0], found)
    pool = pool[(pool != query) & ~np.isin(pool, exclude)]
    weights: FloatArray | None = None
    if neighbours is not None:
        items, item_weights = neighbours
        weights = np.zeros(len(pool), dtype=np.float32)
        inside = np.isin(items, pool)
        weights[np.searchsorted(pool, items[inside])] = item_weights[inside]
    cosine: FloatArray = embeddings[pool] @ embeddings[query]
    scores = similar_scores(weights, cosine)
    order = np.argsort(-scores, kind="stable")
    return pool[order], scores[order]


class SimilarItems:
    """Answers :class:`SimilarRequest` s over one user tower version's catalog, item
    embeddings and neighbours; one per ingress replica. ``neighbours`` None: the version has
    none (or they could not be read), and every answer says ``similar:embeddings``."""

    def __init__(
        self,
        *,
        config: GraphConfig,
        catalog: Catalog,
        features: FeatureStore,
        search: ItemSearch,
        neighbours: Neighbours | None,
        versions: dict[str, int],
        executor: ThreadPoolExecutor | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.config = config
        self.catalog = catalog
        self.features = features
        self.search = search
        self.neighbours = neighbours
        #: Only the user tower's version serves this surface (its catalog and embeddings).
        self.versions = {USER_TOWER: versions[USER_TOWER]}
        self._clock = clock
        self._deny = resolve_deny(catalog.item_index, config.rerank.deny_items)
        self._runner = StageRunner(
            executor or ThreadPoolExecutor(4, thread_name_prefix="similar"),
            faults=config.faults,
            clock=clock,
        )

    def validate(self, request: SimilarRequest) -> None:
        if not request.item_id:
            raise BadRequest("item_id: must be a non-empty string")
        if not 1 <= request.k <= self.config.max_k:
            raise BadRequest(f"k: {request.k} is outside 1..{self.config.max_k}")
        if request.user_id is not None and not request.user_id:
            raise BadRequest("user_id: must not be empty")

    async def similar(self, request: SimilarRequest) -> SimilarResponse:
        self.validate(request)
        start = self._clock()
        budgets = self.config.budgets
        deadline = Deadline.after(budgets.total_ms, self._clock)
        stages: list[str] = []
        fallbacks: list[str] = []
        stage_ms: dict[str, float] = {}
        runner = self._runner

        seen = _EMPTY
        if request.user_id is not None:
            with runner.stage("features", stage_ms, stages):
                user = self.features.user(request.user_id)
            if user is not None:
                seen = user.seen
        query = self.catalog.item_index.get(request.item_id)
        exclude = seen if query is None else np.append(seen, np.int64(query))
        # Deny-listed items are left out while gathering too, so they take no candidate's
        # place; re-rank drops them (and the excluded) again whatever the source.
        dropped = np.concatenate([exclude, self._deny])
        n = max(self.config.similar_candidates, request.k)
        items: IntArray
        scores: FloatArray
        if query is None:
            with runner.stage("cold_start", stage_ms, stages):
                items, scores = self._popular(n, dropped)
        else:
            try:
                with runner.stage("similar", stage_ms, stages):
                    timeout = deadline.stage_timeout_s(budgets.similar_ms, budgets.rerank_ms)
                    items, scores = await runner.run(
                        lambda: self._gather(query, n, dropped), timeout, "similar"
                    )
                if self.neighbours is None:
                    runner.fallback("similar", "embeddings", fallbacks, None)
            except (InferenceError, TimeoutError) as exc:
                items, scores = self._popular(n, dropped)
                runner.fallback("similar", "popular", fallbacks, exc)
        with runner.stage("rerank", stage_ms, stages):
            chosen, final = rerank(
                items,
                scores,
                request.k,
                catalog_genres=self.catalog.item_genres,
                genre_names=self.catalog.genre_names,
                config=self.config.rerank,
                exclude=exclude,
                deny=self._deny,
            )
        if fallbacks:
            metrics.DEGRADED.inc()
        return SimilarResponse(
            item_id=request.item_id,
            items=self.catalog.scored(chosen, final),
            model_versions=dict(self.versions),
            stages=stages,
            fallbacks=fallbacks,
            known_item=query is not None,
            latency_ms=(self._clock() - start) * 1000.0,
            stage_ms=stage_ms,
        )

    def _gather(self, query: int, n: int, exclude: IntArray) -> tuple[IntArray, FloatArray]:
        """The stage: the query's neighbours and its ``n`` nearest items by embedding, less
        ``exclude``, scored (blocking; in the executor)."""
        self._runner.inject("similar")
        embeddings = self.search.embeddings
        found = self.search.search(embeddings[query], n, exclude)
        neighbours = None if self.neighbours is None else self.neighbours.of(query)
        return score_candidates(query, neighbours, found.items, embeddings, exclude)

    def _popular(self, n: int, exclude: IntArray) -> tuple[IntArray, FloatArray]:
        """The ``n`` most popular items less ``exclude``, scored by rank (1, 1/2, 1/3...)."""
        items = self.catalog.popular_for({}, n, exclude=exclude)
        return items, (1.0 / np.arange(1, len(items) + 1)).astype(np.float32)


def annotate(response: SimilarResponse) -> None:
    """Put the response's outcome on the current span (what a trace viewer shows first)."""
    set_attributes(
        trace.get_current_span(),
        {
            "cascade.item_id": response.item_id,
            "cascade.fallbacks": response.fallbacks,
            "cascade.known_item": response.known_item,
        },
    )
