"""The graph's stages as plain, synchronous building blocks over a model runtime.

Each stage does its work or raises; the orchestrator (:mod:`inference.graph.recommender`)
decides budgets and fallbacks. Keeping the stages free of deadlines and event loops lets the
same code run in Ray Serve replicas, in tests, and in the in-process ceiling benchmark.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from pathlib import Path

import faiss
import numpy as np

from contract.arrays import FloatArray, IntArray
from contract.candidates import ITEM_ITEM, POPULAR, SOURCES, TWO_TOWER, merge, proposals
from contract.names import COMBINER, ITEM_INDEX_FILE, RANKERS, USER_TOWER
from contract.ranking import RANKING, Preranker
from inference.errors import InferenceError, ModelNotFound
from inference.graph.catalog import Catalog
from inference.graph.features import UserFeatures
from inference.graph.item_item import ItemItemScores
from inference.runtime import ModelRuntime, Tensors

#: How far back the ranking cost estimate looks.
COST_WINDOW_S = 2.0
#: How long a one-call model version the server did not have is left alone.
ONE_CALL_RETRY_S = 30.0


@dataclass(frozen=True)
class Candidates:
    """Retrieval's answer: item indices in merged order (:mod:`contract.candidates`), their
    two-tower inner-product scores and, when known, which sources proposed each (bits as
    :data:`~contract.candidates.SOURCES`) and their item-item scores (the combiner's fourth
    input, computed once in retrieval rather than again in ranking)."""

    items: IntArray
    scores: FloatArray
    sources: IntArray | None = None
    item_item: FloatArray | None = None

    def head(self, n: int) -> Candidates:
        return Candidates(
            self.items[:n],
            self.scores[:n],
            None if self.sources is None else self.sources[:n],
            None if self.item_item is None else self.item_item[:n],
        )

    def take(self, positions: IntArray) -> Candidates:
        """The candidates at ``positions``, in that order."""
        return Candidates(
            self.items[positions],
            self.scores[positions],
            None if self.sources is None else self.sources[positions],
            None if self.item_item is None else self.item_item[positions],
        )

    def found_by(self, source: str) -> int:
        """How many candidates ``source`` proposed (0 when sources are not recorded)."""
        if self.sources is None:
            return 0
        return int(((self.sources & (1 << SOURCES.index(source))) > 0).sum())


@dataclass(frozen=True)
class RankJob:
    """One request's share of a ranking batch: the user's features and its candidates."""

    user: UserFeatures
    candidates: Candidates
    #: Model versions for this job (an experiment variant's); None: the ranker's defaults.
    versions: dict[str, int] | None = None


@dataclass
class RankResult:
    """Final pre-re-rank scores for one job, and which fallbacks produced them. ``items``:
    the candidates the scores belong to (the pre-ranker's head, in its order, perhaps
    truncated); None only in an empty result."""

    scores: FloatArray
    fallbacks: list[str] = field(default_factory=list)
    batch_size: int = 1
    items: IntArray | None = None


def plan_candidates(
    sizes: Sequence[int], budget_s: float, seconds_per_candidate: float, floor: int
) -> list[int]:
    """How many of each job's candidates (best retrieval scores first) to rank so the batch
    fits its time budget, given the measured cost per candidate.

    Under load, ranking every candidate would miss the deadline and waste the work; ranking
    the head of each list keeps most of the quality (the final top-k come mostly from it).
    Never below ``floor`` per job (or the job's size), never above the job's size.
    """
    total = sum(sizes)
    if seconds_per_candidate <= 0 or total == 0 or total * seconds_per_candidate <= budget_s:
        return list(sizes)
    share = int(budget_s / seconds_per_candidate / len(sizes))
    return [min(size, max(floor, share)) for size in sizes]


class ItemSearch:
    """Top-n inner-product search over the item embeddings with the seen items removed.

    Uses the build's faiss index (HNSW) when present; ``exact`` searches the embedding
    matrix directly, which is faster than HNSW for catalogs of a few thousand items.
    """

    def __init__(self, directory: Path, *, exact: bool | None = None) -> None:
        self.embeddings = np.ascontiguousarray(
            np.load(directory / "item_embeddings.npy"), dtype=np.float32
        )
        n_items = self.embeddings.shape[0]
        self.exact = n_items <= 20_000 if exact is None else exact
        self.index: faiss.Index | None = None
        if not self.exact:
            faiss.omp_set_num_threads(1)
            self.index = faiss.read_index(str(directory / ITEM_INDEX_FILE))

    def search(self, query: FloatArray, n: int, exclude: IntArray) -> Candidates:
        vector = np.asarray(query, dtype=np.float32).reshape(-1)
        n_items = self.embeddings.shape[0]
        depth = min(n_items, n + len(exclude))
        if self.index is None:
            scores = self.embeddings @ vector
            if len(exclude):
                scores[exclude] = -np.inf
            take = min(n, n_items - len(np.unique(exclude)))
            top = (
                np.argpartition(-scores, take - 1)[:take] if take < n_items else np.arange(n_items)
            )
            top = top[np.argsort(-scores[top], kind="stable")]
            top = top[np.isfinite(scores[top])][:n]
            return Candidates(top.astype(np.int64), scores[top].astype(np.float32))
        hnsw = faiss.downcast_index(self.index)
        if hasattr(hnsw, "hnsw"):
            hnsw.hnsw.efSearch = max(depth, 128)
        found_scores, found = self.index.search(vector[None, :], depth)
        items, scores = found[0], found_scores[0]
        keep = items >= 0
        if len(exclude):
            keep &= ~np.isin(items, exclude)
        return Candidates(items[keep][:n].astype(np.int64), scores[keep][:n].astype(np.float32))


class Retriever:
    """User tower on the runtime, then the candidate sources merged: about ``n`` unseen
    candidates from the towers' ANN search, the item-item model's best for the user's
    history and their segment's most popular items (:mod:`contract.candidates`).

    ``catalog`` supplies the segments' popularity and the user's demographics; ``item_item``
    (combiner version -> weights, or None) the item-item source. Without either, that source
    proposes nothing. Weights that cannot be read leave their source out of this answer (the
    combiner, which needs them too, names the fallback).
    """

    def __init__(
        self,
        runtime: ModelRuntime,
        search: ItemSearch,
        versions: Mapping[str, int],
        *,
        catalog: Catalog | None = None,
        item_item: Callable[[int], ItemItemScores | None] | None = None,
    ) -> None:
        self.runtime = runtime
        self.search = search
        self.versions = versions
        self.catalog = catalog
        self._item_item = item_item

    def __call__(
        self,
        user: UserFeatures,
        n: int,
        timeout_s: float | None = None,
        versions: Mapping[str, int] | None = None,
    ) -> Candidates:
        versions = versions or self.versions
        feed: Tensors = {
            "user_id": np.array([[user.model_id]], dtype=np.int64),
            "user_dense": user.dense[None, :].astype(np.float32),
            "history": user.history[None, :].astype(np.int64),
        }
        out = self.runtime.infer(
            USER_TOWER, feed, version=versions.get(USER_TOWER), timeout_s=timeout_s
        )
        query = np.asarray(out["user_embedding"][0], dtype=np.float32).reshape(-1)
        towers = self.search.search(query, n, user.seen)
        room = proposals(n)
        lists: dict[str, IntArray] = {TWO_TOWER: towers.items}
        weights = self._weights(versions)
        row = None if weights is None else weights.row(user.seen)  # once: source and score
        if weights is not None and row is not None and room > 0:
            lists[ITEM_ITEM] = weights.best(row, user.seen, room)
        if self.catalog is not None and room > 0:
            context = {} if user.index is None else self.catalog.demographics(user.index)
            lists[POPULAR] = self.catalog.popular_for(context, room, exclude=user.seen)
        items, sources = merge(lists, n)
        known = items < self.search.embeddings.shape[0]
        scores = np.where(known, self.search.embeddings[np.where(known, items, 0)] @ query, 0.0)
        return Candidates(
            items,
            scores.astype(np.float32),
            sources,
            None if weights is None or row is None else weights.pick(row, items),
        )

    def _weights(self, versions: Mapping[str, int]) -> ItemItemScores | None:
        version = versions.get(COMBINER)
        if self._item_item is None or version is None:
            return None
        try:
            return self._item_item(version)
        except InferenceError:
            return None


def ranker_feed(catalog: Catalog, jobs: Sequence[RankJob]) -> Tensors:
    """One feed for all jobs' candidates: user columns repeated per candidate, and each
    candidate blanked out of its user's history (as in training; a no-op for unseen items)."""
    sizes = [len(job.candidates.items) for job in jobs]
    items = np.concatenate([job.candidates.items for job in jobs])
    user_ids = np.repeat([job.user.model_id for job in jobs], sizes).astype(np.int64)
    dense = np.repeat(np.stack([job.user.dense for job in jobs]), sizes, axis=0)
    history = np.repeat(np.stack([job.user.history for job in jobs]), sizes, axis=0)
    history = np.where(history == (items + 1)[:, None], 0, history)
    return {
        "user_id": user_ids[:, None],
        "item_id": (items + 1).astype(np.int64)[:, None],
        "user_dense": dense.astype(np.float32, copy=False),
        "item_dense": catalog.features.item_dense[items],
        "history": history.astype(np.int64, copy=False),
    }


def ranking_feed(jobs: Sequence[RankJob], item_item: FloatArray | None) -> Tensors:
    """The one-call model's feed (:func:`contract.ranking.ranking_signature`): each user's
    features once, each candidate by id with the row of its user (``owner``)."""
    sizes = [len(job.candidates.items) for job in jobs]
    items = np.concatenate([job.candidates.items for job in jobs])
    feed: Tensors = {
        "user_id": np.array([[job.user.model_id] for job in jobs], dtype=np.int64),
        "user_dense": np.stack([job.user.dense for job in jobs]).astype(np.float32, copy=False),
        "history": np.stack([job.user.history for job in jobs]).astype(np.int64, copy=False),
        "item_id": (items + 1).astype(np.int64)[:, None],
        "owner": np.repeat(np.arange(len(jobs), dtype=np.int64), sizes),
        "retrieval": np.concatenate([job.candidates.scores for job in jobs]).astype(np.float32)[
            :, None
        ],
    }
    if item_item is not None:
        feed["item_item"] = item_item.astype(np.float32)[:, None]
    return feed


class Ranker:
    """The pre-ranker's head of each job's candidates, scored by both rankers and the
    combiner: in one call of the one-call model (``ranking``) when the versions asked for
    are one build's, else one call per ranker over every job's candidates, then the combiner
    (a canary of one ranker).

    Degrades inside the stage: a one-call model that fails leaves the separate models to
    answer; if the combiner fails, the DCN ranker's logit orders the candidates
    ("combiner:ranker_dcn"); if one ranker fails, the other's does. Only when both rankers
    fail does it raise, and the orchestrator falls back to retrieval order.

    ``prerankers`` (combiner version -> pre-ranker, or None) choose each job's head: ``head``
    candidates (None: the build's choice; 0: every candidate) by the pre-ranker's score;
    ``one_call`` (versions -> the one-call model's version for them, or None) says when the
    one-call model computes what the separate ones would.

    Candidates are item indices into the catalog of the user tower version that retrieved
    them, so ``catalogs`` (user tower version -> catalog) supplies each version group's item
    features; without it every group reads ``catalog``. ``item_item`` (combiner version ->
    weights, or None) adds the item-item score as the combiner's fourth input when that
    combiner version has weights.
    """

    def __init__(
        self,
        runtime: ModelRuntime,
        catalog: Catalog,
        versions: Mapping[str, int],
        *,
        pool: ThreadPoolExecutor | None = None,
        on_model_error: Callable[[str, InferenceError], None] | None = None,
        min_ranked: int = 100,
        catalogs: Callable[[int], Catalog] | None = None,
        item_item: Callable[[int], ItemItemScores | None] | None = None,
        prerankers: Callable[[int], Preranker | None] | None = None,
        head: int | None = None,
        one_call: Callable[[Mapping[str, int]], int | None] | None = None,
    ) -> None:
        self.runtime = runtime
        self._item_item = item_item
        self._prerankers = prerankers
        self.head = head
        self._one_call = one_call
        #: One-call model versions found missing, and until when not to ask for them again.
        self._one_call_off: dict[int, float] = {}
        self.catalog = catalog
        self._catalogs = catalogs
        self.versions = versions
        self.min_ranked = min_ranked
        #: (when, wall seconds per ranked candidate) of recent batches.
        self._costs: deque[tuple[float, float]] = deque(maxlen=32)
        #: Set to pin the estimate (tests); None: measured over the last few seconds.
        self.fixed_seconds_per_candidate: float | None = None
        #: Calls ranking now: the recent costs describe contention only while there is some.
        self._in_flight = 0
        self._in_flight_lock = threading.Lock()
        self._own_pool = pool is None
        self._pool = pool or ThreadPoolExecutor(len(RANKERS), thread_name_prefix="ranker")
        self._on_model_error = on_model_error

    def close(self) -> None:
        """Stop the ranker's threads (a pool passed in belongs to the caller)."""
        if self._own_pool:
            self._pool.shutdown(wait=True)

    @property
    def seconds_per_candidate(self) -> float:
        """Cost per candidate over the last :data:`COST_WINDOW_S` seconds: the median while
        other calls are ranking (the cost under this load), the least when none is (what a call
        costs without contention: a burst that just ended must not truncate or drop the first
        requests after it); 0 (rank everything) when nothing was ranked lately."""
        if self.fixed_seconds_per_candidate is not None:
            return self.fixed_seconds_per_candidate
        since = time.monotonic() - COST_WINDOW_S
        recent = [cost for when, cost in self._costs if when >= since]
        if not recent:
            return 0.0
        return float(np.median(recent)) if self._in_flight > 0 else min(recent)

    def catalog_for(self, versions: Mapping[str, int]) -> Catalog:
        """The catalog of the user tower version in ``versions``."""
        version = versions.get(USER_TOWER)
        if self._catalogs is None or version is None:
            return self.catalog
        return self._catalogs(version)

    def item_item_for(self, versions: Mapping[str, int]) -> ItemItemScores | None:
        """The item-item weights of the combiner version in ``versions`` (None: three inputs)."""
        version = versions.get(COMBINER)
        if self._item_item is None or version is None:
            return None
        return self._item_item(version)

    def preranker_for(self, versions: Mapping[str, int]) -> Preranker | None:
        """The pre-ranker beside the combiner version in ``versions`` (None: rank all)."""
        version = versions.get(COMBINER)
        if self._prerankers is None or version is None:
            return None
        return self._prerankers(version)

    def _head(self, job: RankJob) -> RankJob:
        """The job with only its pre-ranker's head of candidates, best first."""
        try:
            preranker = self.preranker_for(job.versions or self.versions)
        except InferenceError:  # unreadable: every candidate costs more, none is lost
            preranker = None
        if preranker is None:
            return job
        head = preranker.head if self.head is None else self.head
        found = job.candidates
        if head <= 0 or head >= len(found.items):
            return job
        chosen = preranker.select(found.scores, found.item_item, head)
        return replace(job, candidates=found.take(chosen))

    def _item_item_column(
        self, jobs: Sequence[RankJob], versions: Mapping[str, int]
    ) -> FloatArray | None:
        """Every candidate's item-item score when the combiner version has weights (None:
        it blends three scores); weights that cannot be read raise ``InferenceError``."""
        weights = self.item_item_for(versions)
        if weights is None:
            return None
        return np.concatenate(
            [
                job.candidates.item_item
                if job.candidates.item_item is not None
                else weights.scores(job.user.seen, job.candidates.items)
                for job in jobs
            ]
        )

    def _combiner_inputs(
        self,
        jobs: Sequence[RankJob],
        logits: Mapping[str, FloatArray],
        retrieval: FloatArray,
        versions: Mapping[str, int],
    ) -> FloatArray:
        """(candidates, 3 or 4): the rankers' logits, the retrieval score and, when the combiner
        version has weights, the item-item score; weights that cannot be read raise
        ``InferenceError``, so the combiner's fallback applies."""
        columns = [logits[RANKERS[0]], logits[RANKERS[1]], retrieval]
        item_item = self._item_item_column(jobs, versions)
        if item_item is not None:
            columns.append(item_item)
        return np.stack(columns, axis=1)

    def _infer(
        self, model: str, feed: Tensors, timeout_s: float | None, versions: Mapping[str, int]
    ) -> FloatArray:
        out = self.runtime.infer(model, feed, version=versions.get(model), timeout_s=timeout_s)
        return np.asarray(next(iter(out.values())), dtype=np.float32).reshape(-1)

    def __call__(self, jobs: Sequence[RankJob], timeout_s: float | None = None) -> list[RankResult]:
        """Rank every job; jobs that ask for other model versions are ranked in their own
        group, so one batch never mixes versions."""
        jobs = [self._head(job) for job in jobs]
        groups: dict[tuple[tuple[str, int], ...], list[int]] = {}
        for position, job in enumerate(jobs):
            key = tuple(sorted((job.versions or self.versions).items()))
            groups.setdefault(key, []).append(position)
        if timeout_s is not None:
            # Keep a fifth of the time for the call's own overheads and the combiner.
            sizes = [len(job.candidates.items) for job in jobs]
            keep = plan_candidates(
                sizes, 0.8 * timeout_s, self.seconds_per_candidate, self.min_ranked
            )
            jobs = [
                job if n == size else replace(job, candidates=job.candidates.head(n))
                for job, n, size in zip(jobs, keep, sizes, strict=True)
            ]
            truncated = {i for i, (n, size) in enumerate(zip(keep, sizes, strict=True)) if n < size}
        else:
            truncated = set()
        results: list[RankResult | None] = [None] * len(jobs)
        with self._in_flight_lock:
            self._in_flight += 1
        try:
            for key, positions in groups.items():
                self._rank_group(jobs, positions, dict(key), timeout_s, truncated, results)
        finally:
            with self._in_flight_lock:
                self._in_flight -= 1
        return [r for r in results if r is not None]

    def _rank_group(
        self,
        jobs: Sequence[RankJob],
        positions: list[int],
        versions: dict[str, int],
        timeout_s: float | None,
        truncated: set[int],
        results: list[RankResult | None],
    ) -> None:
        """Rank the jobs at ``positions`` (one set of versions) into ``results``."""
        ranked = self._rank([jobs[p] for p in positions], versions, timeout_s)
        for position, result in zip(positions, ranked, strict=True):
            result.batch_size = len(jobs)
            if position in truncated:
                result.fallbacks.insert(0, "ranking:truncated")
            results[position] = result

    def _rank(
        self, jobs: Sequence[RankJob], versions: Mapping[str, int], timeout_s: float | None
    ) -> list[RankResult]:
        start = time.monotonic()
        version = self._one_call_version(versions)
        scores = None
        if version is not None:
            scores = self._rank_one_call(jobs, versions, version, timeout_s)
        fallbacks: list[str] = []
        if scores is None:
            left = timeout_s
            if version is not None and timeout_s is not None:  # the one-call try took some
                left = max(0.001, timeout_s - (time.monotonic() - start))
            scores, fallbacks = self._rank_separately(jobs, versions, left)
        n_candidates = len(scores)
        if not fallbacks and n_candidates >= 100:  # small calls measure overhead, not cost
            now = time.monotonic()
            self._costs.append((now, (now - start) / n_candidates))
        results: list[RankResult] = []
        offset = 0
        for job in jobs:
            size = len(job.candidates.items)
            part = scores[offset : offset + size]
            results.append(RankResult(part.copy(), list(fallbacks), items=job.candidates.items))
            offset += size
        return results

    def _one_call_version(self, versions: Mapping[str, int]) -> int | None:
        """The one-call model's version for ``versions``; None when there is none or the
        server lately did not have it."""
        version = None if self._one_call is None else self._one_call(versions)
        if version is None or self._one_call_off.get(version, 0.0) > time.monotonic():
            return None
        return version

    def _rank_one_call(
        self,
        jobs: Sequence[RankJob],
        versions: Mapping[str, int],
        version: int,
        timeout_s: float | None,
    ) -> FloatArray | None:
        """The combiner's scores from the one-call model; None when it failed (the separate
        models answer instead)."""
        try:
            feed = ranking_feed(jobs, self._item_item_column(jobs, versions))
            out = self.runtime.infer(RANKING, feed, version=version, timeout_s=timeout_s)
        except InferenceError as exc:
            if self._on_model_error is not None:
                self._on_model_error(RANKING, exc)
            if isinstance(exc, ModelNotFound):  # not loaded (e.g. an older server): ask later
                self._one_call_off[version] = time.monotonic() + ONE_CALL_RETRY_S
            return None
        return np.asarray(out["score"], dtype=np.float32).reshape(-1)

    def _rank_separately(
        self,
        jobs: Sequence[RankJob],
        versions: Mapping[str, int],
        timeout_s: float | None,
    ) -> tuple[FloatArray, list[str]]:
        """Each ranker in its own call, then the combiner, degrading as the class says."""
        start = time.monotonic()
        feed = ranker_feed(self.catalog_for(versions), jobs)
        futures = {m: self._pool.submit(self._infer, m, feed, timeout_s, versions) for m in RANKERS}
        logits: dict[str, FloatArray] = {}
        errors: dict[str, InferenceError] = {}
        for model, future in futures.items():
            try:
                logits[model] = future.result()
            except InferenceError as exc:
                errors[model] = exc
                if self._on_model_error is not None:
                    self._on_model_error(model, exc)
        if not logits:
            raise next(iter(errors.values()))
        retrieval = np.concatenate([job.candidates.scores for job in jobs]).astype(np.float32)
        fallbacks: list[str] = []
        if errors:
            survivor = next(iter(logits))
            scores, fallbacks = logits[survivor], [f"combiner:{survivor}"]
        else:
            left = None if timeout_s is None else max(0.0, timeout_s - (time.monotonic() - start))
            try:
                stacked = self._combiner_inputs(jobs, logits, retrieval, versions)
                scores = self._infer(COMBINER, {"scores": stacked}, left, versions)
            except InferenceError as exc:
                if self._on_model_error is not None:
                    self._on_model_error(COMBINER, exc)
                scores, fallbacks = logits[RANKERS[0]], [f"combiner:{RANKERS[0]}"]
        return scores, fallbacks
