"""Ranking as a service: the candidates of concurrent requests ranked together, one call per
ranker per batch, whether it runs as its own Serve deployment or inside an ingress replica."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar, cast

import numpy as np
from ray import serve

from inference.errors import InferenceError
from inference.graph.components import Components, load_components
from inference.graph.settings import GraphSettings
from inference.graph.stages import Ranker, RankJob, RankResult
from inference.graph.telemetry import extract, tracer

log = logging.getLogger("cascade.inference")

_F = TypeVar("_F", bound=Callable[..., Any])
#: ``serve.batch``, typed as the identity its callers see (its stubs reject methods).
_batched = cast(Callable[[_F], _F], serve.batch(max_batch_size=8, batch_wait_timeout_s=0.001))


class RankingService:
    """Ranks the candidates of concurrent requests together: one call per ranker per batch.

    ``components``: already loaded (with a ranker) by an ingress ranking inline, which keeps
    owning them; None loads this service's own, closed with it.
    """

    def __init__(self, settings: GraphSettings, components: Components | None = None) -> None:
        self._owns_components = components is None
        self.components = components or load_components(settings, with_ranker=True)
        if self.components.ranker is None:
            raise InferenceError("ranking: the components were loaded without a ranker")
        self.ranker: Ranker = self.components.ranker
        self.config = settings.graph
        batched: Any = self.rank_batch  # serve.batch adds these setters
        batched.set_max_batch_size(self.config.max_batch_requests)
        batched.set_batch_wait_timeout_s(self.config.batch_wait_ms / 1000.0)
        self._pool = ThreadPoolExecutor(2, thread_name_prefix="ranking")
        self._closed = False

    async def rank(self, job: RankJob, timeout_s: float, carrier: dict[str, str]) -> RankResult:
        batched: Any = self.rank_batch
        result: RankResult = await batched(job, time.monotonic() + timeout_s, carrier)
        return result

    @_batched
    async def rank_batch(
        self, jobs: list[RankJob], expiries: list[float], carriers: list[dict[str, str]]
    ) -> list[RankResult]:
        start_ns = time.time_ns()
        loop = asyncio.get_running_loop()
        try:
            return await loop.run_in_executor(self._pool, self._rank_live, jobs, expiries)
        finally:
            end_ns = time.time_ns()
            spans = tracer()
            for carrier in carriers:
                span = spans.start_span(
                    "ranking.batch", context=extract(carrier), start_time=start_ns
                )
                span.set_attribute("cascade.batch_size", len(jobs))
                span.end(end_time=end_ns)

    def _rank_live(self, jobs: list[RankJob], expiries: list[float]) -> list[RankResult]:
        """Rank the jobs whose callers still wait; the rest get an empty result (a fallback).

        Dropped: jobs whose caller has already given up (under overload they would hold the
        models while live requests time out behind them), and jobs left with less time than
        ranking the minimum would take.
        """
        now = time.monotonic()
        least = self.ranker.min_ranked * self.ranker.seconds_per_candidate
        live = [i for i, expiry in enumerate(expiries) if expiry - now > least]
        results = [RankResult(np.zeros(0, np.float32)) for _ in jobs]
        if not live:
            return results
        delay = self.config.faults.delay_ms.get("ranking", 0.0) / 1000.0
        if delay:
            time.sleep(delay)
        timeout = max(0.001, min(expiries[i] for i in live) - time.monotonic())
        try:
            ranked = self.ranker([jobs[i] for i in live], timeout)
        except InferenceError as exc:
            # An empty result tells the caller to fall back; raising would cost a logged
            # traceback per job in Serve, the moment the machine can least afford it.
            log.debug("ranking failed for a batch of %d: %s", len(live), exc)
            return results
        for i, result in zip(live, ranked, strict=True):
            results[i] = result
        return results

    def close(self) -> None:
        """Stop the ranking threads; close the components if this service loaded them."""
        if self._closed:
            return
        self._closed = True
        self._pool.shutdown(wait=False, cancel_futures=True)
        if self._owns_components:
            self.components.close()

    def __del__(self) -> None:
        """Serve calls this when it stops the replica (and Python when it collects one)."""
        pool = getattr(self, "_pool", None)  # absent if __init__ failed part way
        if pool is not None:
            self.close()
