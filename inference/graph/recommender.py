"""The graph's orchestrator: features -> retrieval -> ranking (+ combiner) -> re-rank, each
stage under its budget, each failure turned into a named fallback.

Fallbacks, in the reference design's order: retrieval -> popular items for the user's
demographic ("retrieval:popular", ranking is skipped: its inputs would be meaningless);
ranking -> retrieval order ("ranking:retrieval_order"); combiner -> one ranker
("combiner:<ranker>", decided inside the ranking stage). Under load, ranking scores only the
head of the candidate list that fits its budget ("ranking:truncated") rather than missing it.
Re-rank runs inline: it is arithmetic on a thousand rows, well under its budget, and has
nothing to fall back to.
A request only fails when its input is bad; unknown users get popular items for their
demographic ("cold_start"). With the answer cache on (:mod:`~inference.graph.answers`), a known
user's repeat request re-ranks their last full-quality answer ("answer_cache") instead.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor

import numpy as np
from opentelemetry import trace

from contract.arrays import FloatArray, IntArray
from contract.graph_config import GraphConfig
from inference import metrics
from inference.errors import BadRequest, DeadlineExceeded, InferenceError
from inference.graph.answers import AnswerCache, answer_key
from inference.graph.catalog import Catalog
from inference.graph.deadline import Deadline
from inference.graph.features import FeatureStore, UserFeatures
from inference.graph.rerank import rerank, resolve_deny
from inference.graph.stage_runner import StageRunner
from inference.graph.stages import Candidates, RankJob, RankResult, Retriever
from inference.graph.telemetry import inject, set_attributes
from inference.graph.types import RecommendRequest, RecommendResponse

#: Ranks one job within ``timeout_s``: in-process, or through the ranking deployment.
RankFn = Callable[[RankJob, float, dict[str, str]], Awaitable[RankResult]]


class Recommender:
    """Answers :class:`RecommendRequest` s; one per ingress replica. Thread-safe stages run in
    ``executor`` so the event loop only waits; ``clock`` is injectable for tests."""

    def __init__(
        self,
        *,
        config: GraphConfig,
        catalog: Catalog,
        features: FeatureStore,
        retriever: Retriever,
        rank: RankFn,
        versions: dict[str, int],
        executor: ThreadPoolExecutor | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.config = config
        self.catalog = catalog
        self.features = features
        self.retriever = retriever
        self.rank = rank
        self.versions = dict(versions)
        self._clock = clock
        self._deny = resolve_deny(catalog.item_index, config.rerank.deny_items)
        self._runner = StageRunner(
            executor or ThreadPoolExecutor(16, thread_name_prefix="graph"),
            faults=config.faults,
            clock=clock,
        )
        #: Full-quality answers of known users (off unless ``answer_cache.ttl_s`` > 0).
        self.answers = AnswerCache(config.answer_cache, clock, on_lookup=_count_answer_lookup)

    def validate(self, request: RecommendRequest) -> None:
        if not request.user_id:
            raise BadRequest("user_id: must be a non-empty string")
        if not 1 <= request.k <= self.config.max_k:
            raise BadRequest(f"k: {request.k} is outside 1..{self.config.max_k}")

    async def recommend(self, request: RecommendRequest) -> RecommendResponse:
        self.validate(request)
        start = self._clock()
        deadline = Deadline.after(self.config.budgets.total_ms, self._clock)
        stages: list[str] = []
        fallbacks: list[str] = []
        stage_ms: dict[str, float] = {}

        with self._runner.stage("features", stage_ms, stages):
            user = self.features.user(request.user_id)
        items: IntArray
        scores: FloatArray
        if user is None:
            with self._runner.stage("cold_start", stage_ms, stages):
                items = self.catalog.popular_for(request.context, self.config.candidates)
                scores = _rank_scores(len(items))
            exclude: IntArray = np.zeros(0, dtype=np.int64)
        else:
            exclude = user.seen
            key = answer_key(user, self.versions) if self.answers.enabled else None
            cached = None if key is None else self.answers.get(key)
            if cached is not None:
                with self._runner.stage("answer_cache", stage_ms, stages):
                    items, scores = cached.items, cached.scores
            else:
                items, scores = await self._retrieve_and_rank(
                    user, request, deadline, stages, fallbacks, stage_ms
                )
                if key is not None and not fallbacks and "ranking" in stages:
                    self.answers.put(key, items, scores)
        with self._runner.stage("rerank", stage_ms, stages):
            chosen, final = self._rerank(items, scores, request.k, exclude)
        if fallbacks:
            metrics.DEGRADED.inc()
        return RecommendResponse(
            user_id=request.user_id,
            items=self.catalog.scored(chosen, final),
            model_versions=dict(self.versions),
            stages=stages,
            fallbacks=fallbacks,
            known_user=user is not None,
            latency_ms=(self._clock() - start) * 1000.0,
            stage_ms=stage_ms,
            score_source=score_source(user is not None, fallbacks),
        )

    async def _retrieve_and_rank(
        self,
        user: UserFeatures,
        request: RecommendRequest,
        deadline: Deadline,
        stages: list[str],
        fallbacks: list[str],
        stage_ms: dict[str, float],
    ) -> tuple[IntArray, FloatArray]:
        """Candidates from retrieval, ordered by ranking, each stage under its budget and
        each failure a named fallback."""
        budgets = self.config.budgets
        reserve = budgets.rerank_ms
        candidates: Candidates | None = None
        items: IntArray
        scores: FloatArray
        try:
            with self._runner.stage("retrieval", stage_ms, stages):
                retrieval_s = deadline.stage_timeout_s(budgets.retrieval_ms, reserve)
                candidates = await self._runner.run(
                    lambda: self._retrieve(user, retrieval_s), retrieval_s, "retrieval"
                )
        except (InferenceError, TimeoutError) as exc:
            items, scores = self._popular(user, request)
            self._runner.fallback("retrieval", "popular", fallbacks, exc)
        if candidates is None:
            return items, scores
        items, scores = candidates.items, candidates.scores
        timeout = deadline.stage_timeout_s(budgets.ranking_ms, reserve)
        try:
            if timeout <= 0:
                raise DeadlineExceeded("no time left for ranking")
            with self._runner.stage("ranking", stage_ms, stages):
                result = await asyncio.wait_for(
                    self.rank(RankJob(user, candidates, self.versions), timeout, inject()),
                    timeout,
                )
                metrics.BATCH_SIZE.observe(result.batch_size)
            if len(result.scores) == 0:
                raise DeadlineExceeded("ranking gave up on the job (failed or out of time)")
            # The pre-ranker's head, and under load only its best ("ranking:truncated").
            items = items[: len(result.scores)] if result.items is None else result.items
            scores = result.scores
            for name in result.fallbacks:
                stage, _, used = name.partition(":")
                self._runner.fallback(stage, used, fallbacks, None)
        except (InferenceError, TimeoutError) as exc:
            self._runner.fallback("ranking", "retrieval_order", fallbacks, exc)
        return items, scores

    # ---- stages ----------------------------------------------------------------------------

    def _retrieve(self, user: UserFeatures, timeout_s: float) -> Candidates:
        self._runner.inject("retrieval")
        return self.retriever(user, self.config.candidates, timeout_s, self.versions)

    def _rerank(
        self, items: IntArray, scores: FloatArray, k: int, exclude: IntArray
    ) -> tuple[IntArray, FloatArray]:
        return rerank(
            items,
            scores,
            k,
            catalog_genres=self.catalog.item_genres,
            genre_names=self.catalog.genre_names,
            config=self.config.rerank,
            exclude=exclude,
            deny=self._deny,
        )

    def _popular(
        self, user: UserFeatures, request: RecommendRequest
    ) -> tuple[IntArray, FloatArray]:
        context = dict(request.context)
        if user.index is not None:
            context = {**self.catalog.demographics(user.index), **context}
        items = self.catalog.popular_for(context, self.config.candidates, exclude=user.seen)
        return items, _rank_scores(len(items))


def _count_answer_lookup(hit: bool) -> None:
    metrics.ANSWER_CACHE.labels(result="hit" if hit else "miss").inc()


def score_source(known_user: bool, fallbacks: list[str]) -> str:
    """Which stage's score a response's items carry (:data:`~inference.graph.types.SCORE_SOURCES`),
    from the fallbacks that fired."""
    if not known_user or "retrieval:popular" in fallbacks:
        return "popularity"
    if "ranking:retrieval_order" in fallbacks:
        return "two_tower"
    for name in fallbacks:
        stage, _, used = name.partition(":")
        if stage == "combiner":
            return used
    return "combiner"


def _rank_scores(n: int) -> FloatArray:
    """Scores for a list that is already in order (popular items): 1, 1/2, 1/3, ..."""
    return (1.0 / np.arange(1, n + 1)).astype(np.float32)


def annotate(response: RecommendResponse) -> None:
    """Put the response's outcome on the current span (what a trace viewer shows first)."""
    set_attributes(
        trace.get_current_span(),
        {
            "cascade.user_id": response.user_id,
            "cascade.fallbacks": response.fallbacks,
            "cascade.known_user": response.known_user,
        },
    )
