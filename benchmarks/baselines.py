"""Two reference points for the graph benchmark (:mod:`benchmarks.graph`).

* :class:`InProcessGraph`, the ceiling: the same models (onnxruntime, one intra-op thread each)
  and the same stage code as the served graph, called in-process in a tight loop. No server,
  no serialization, no event loop, so what the served graph loses against it is the price of
  serving. :func:`limit_rps` measures it.
* :func:`build_naive_app`, the floor: the composition a Ray Serve user writes first. One
  deployment per stage, each awaiting the next through a handle. Serve's defaults are kept
  (``max_ongoing_requests``, no batching, the Python proxy, access logs), and each replica
  that needs a model opens an onnxruntime session with the default thread counts. Comparing
  the graph with this shows what its design choices are worth, not just what Serve costs.
  None of :data:`inference.graph.launcher.RAY_ENVIRONMENT` applies here; whoever starts Ray
  for this app must not set it.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort
from fastapi import FastAPI
from pydantic import BaseModel, Field
from ray import serve
from ray.serve import Application, Deployment
from ray.serve.handle import DeploymentHandle

from contract.arrays import FloatArray, IntArray
from contract.graph_config import GraphConfig
from contract.model_config import MODEL_FILENAME
from contract.names import COMBINER, RANKERS, USER_TOWER
from contract.repository import RepositoryReader
from inference.graph.catalog import Catalog
from inference.graph.components import load_components, resolve_versions
from inference.graph.features import EmbeddedFeatureStore, UserFeatures
from inference.graph.item_item import ItemItemScores
from inference.graph.rerank import rerank, resolve_deny
from inference.graph.settings import GraphSettings
from inference.graph.stages import Candidates, ItemSearch, RankJob, ranker_feed

__all__ = [
    "NAIVE_ROUTE",
    "InProcessGraph",
    "NaiveCombiner",
    "NaiveFeatures",
    "NaiveIngressView",
    "NaiveRanking",
    "NaiveRerank",
    "NaiveRetrieval",
    "build_naive_app",
    "limit_rps",
    "naive_api",
]

#: The defaults the served graph runs with; a module constant, not a call in a signature.
DEFAULT_CONFIG = GraphConfig()

NAIVE_ROUTE = "/v1/recommend"


def _user_tower_dir(repository: Path, versions: dict[str, int]) -> Path:
    """Where the catalog, item embeddings and index live: the served user tower's version."""
    return RepositoryReader(repository).version_dir(USER_TOWER, versions[USER_TOWER])


def _versions(repository: Path, config: GraphConfig) -> dict[str, int]:
    return resolve_versions(Path(repository), dict(config.model_versions))


# --------------------------------------------------------------------------------------------
# Ceiling: the graph's stages in-process
# --------------------------------------------------------------------------------------------


class InProcessGraph:
    """The graph's models and stage logic behind one synchronous call.

    Loaded as a graph replica loads them (:func:`inference.graph.components.load_components`
    with the onnxruntime runtime), but with no deadlines, fallback bookkeeping or event loop:
    the fastest these stages can answer on this machine. Thread-safe (onnxruntime sessions
    and the feature cache are), so several threads may share one instance.
    """

    def __init__(self, repository: Path, config: GraphConfig = DEFAULT_CONFIG) -> None:
        self.config = config
        settings = GraphSettings(repository=Path(repository), runtime="onnxruntime", graph=config)
        self.components = load_components(settings, with_ranker=True)
        self.catalog = self.components.catalog
        self._deny = resolve_deny(self.catalog.item_index, config.rerank.deny_items)

    def recommend(self, user_id: str, k: int = 10) -> list[str]:
        """Item ids for ``user_id``: features, retrieval, ranking (the pre-ranker's head, both
        rankers and the combiner), re-rank; the globally popular items for a user the store
        does not know."""
        parts = self.components
        user = parts.features.user(user_id)
        if user is None:
            return self._ids(self.catalog.popular_for({}, k))
        assert parts.ranker is not None
        candidates = parts.retriever(user, self.config.candidates)
        (ranked,) = parts.ranker([RankJob(user, candidates)])
        chosen, _ = rerank(
            candidates.items if ranked.items is None else ranked.items,
            ranked.scores,
            k,
            catalog_genres=self.catalog.item_genres,
            genre_names=self.catalog.genre_names,
            config=self.config.rerank,
            exclude=user.seen,
            deny=self._deny,
        )
        return self._ids(chosen)

    def close(self) -> None:
        """Stop the ranker threads and drop the sessions."""
        self.components.close()

    def _ids(self, items: IntArray) -> list[str]:
        return [self.catalog.item_ids[int(i)] for i in items]


def limit_rps(
    repository: Path,
    users: Sequence[str],
    seconds: float,
    workers: int = 1,
    *,
    k: int = 10,
    warmup_s: float = 1.0,
    graph: InProcessGraph | None = None,
) -> dict[str, float]:
    """Requests per second and latency percentiles of :meth:`InProcessGraph.recommend` called
    back to back by ``workers`` threads sharing one graph, cycling through ``users``.

    The first ``warmup_s`` (session first-run costs, cold caches) is excluded. Requests that
    start in the measured window count; the window ends when the last of them returns, so
    ``rps`` is not inflated by cutting requests off. Pass ``graph`` to reuse a loaded one."""
    if not users:
        raise ValueError("limit_rps needs at least one user id")
    if seconds <= 0 or warmup_s < 0 or workers < 1:
        raise ValueError("seconds must be > 0, warmup_s >= 0 and workers >= 1")
    owned = graph is None
    target = InProcessGraph(repository) if graph is None else graph
    start = time.perf_counter()
    measure_from = start + warmup_s
    stop_at = measure_from + seconds
    latencies: list[list[float]] = [[] for _ in range(workers)]
    finished = [measure_from] * workers
    failure: list[BaseException] = []

    def loop(worker: int) -> None:
        own = latencies[worker]
        i = worker * max(1, len(users) // workers)  # workers start on different users
        try:
            while not failure:
                began = time.perf_counter()
                if began >= stop_at:
                    return
                target.recommend(users[i % len(users)], k)
                ended = time.perf_counter()
                i += 1
                if began >= measure_from:
                    own.append(ended - began)
                    finished[worker] = ended
        except BaseException as exc:  # surfaced in the caller, and stops the other workers
            failure.append(exc)

    threads = [
        threading.Thread(target=loop, args=(w,), name=f"limit-rps-{w}") for w in range(workers)
    ]
    try:
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    finally:
        if owned:
            target.close()
    if failure:
        raise failure[0]
    measured = np.array([x for own in latencies for x in own], dtype=np.float64) * 1000.0
    duration = max(finished) - measure_from
    if len(measured) == 0 or duration <= 0:
        raise RuntimeError(f"no request finished within {seconds:g}s after warm-up")
    return {
        "workers": workers,
        "requests": len(measured),
        "duration_s": duration,
        "rps": len(measured) / duration,
        "p50_ms": float(np.percentile(measured, 50)),
        "p99_ms": float(np.percentile(measured, 99)),
        "mean_ms": float(measured.mean()),
    }


# --------------------------------------------------------------------------------------------
# Floor: one Ray Serve deployment per stage, Serve's defaults
# --------------------------------------------------------------------------------------------


def _session(repository: Path, model: str, version: int) -> Any:
    """A session as a first attempt opens one: default SessionOptions, so onnxruntime uses
    as many intra-op threads as the machine has cores, in every replica that holds a model."""
    path = RepositoryReader(repository).version_dir(model, version) / MODEL_FILENAME
    return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])


class NaiveRecommendBody(BaseModel):
    """``POST /v1/recommend`` of the naive app."""

    user_id: str
    k: int = Field(10, ge=1, le=DEFAULT_CONFIG.max_k)


naive_api = FastAPI(title="Cascade graph, naive Ray Serve composition")


class NaiveRetrieval:
    """User tower (its own session) and the item search."""

    def __init__(self, repository: Path, config: GraphConfig) -> None:
        versions = _versions(repository, config)
        self.session = _session(repository, USER_TOWER, versions[USER_TOWER])
        self.search = ItemSearch(_user_tower_dir(repository, versions))
        self.candidates = config.candidates

    def __call__(
        self, model_id: int, dense: FloatArray, history: IntArray, seen: IntArray
    ) -> tuple[IntArray, FloatArray]:
        feed = {
            "user_id": np.array([[model_id]], dtype=np.int64),
            "user_dense": np.asarray(dense, dtype=np.float32)[None, :],
            "history": np.asarray(history, dtype=np.int64)[None, :],
        }
        (embedding,) = self.session.run(["user_embedding"], feed)
        found = self.search.search(embedding[0], self.candidates, seen)
        return found.items, found.scores


class NaiveRanking:
    """Both rankers, one after the other, on the graph's feed; returns their logits."""

    def __init__(self, repository: Path, config: GraphConfig) -> None:
        versions = _versions(repository, config)
        self.catalog = Catalog.load(_user_tower_dir(repository, versions))
        self.sessions = {m: _session(repository, m, versions[m]) for m in RANKERS}

    def __call__(
        self, model_id: int, dense: FloatArray, history: IntArray, items: IntArray
    ) -> dict[str, FloatArray]:
        user = UserFeatures(
            index=model_id - 1,
            model_id=model_id,
            dense=dense,
            history=history,
            seen=np.zeros(0, dtype=np.int64),
        )
        candidates = Candidates(items, np.zeros(len(items), dtype=np.float32))
        feed = ranker_feed(self.catalog, [RankJob(user, candidates)])
        return {
            model: np.asarray(session.run(None, feed)[0], dtype=np.float32).reshape(-1)
            for model, session in self.sessions.items()
        }


class NaiveCombiner:
    """The combiner over (ranker logits..., retrieval score[, item-item score]) per candidate."""

    def __init__(self, repository: Path, config: GraphConfig) -> None:
        versions = _versions(repository, config)
        self.session = _session(repository, COMBINER, versions[COMBINER])
        directory = RepositoryReader(repository).version_dir(COMBINER, versions[COMBINER])
        self.item_item = ItemItemScores.load(directory)

    def __call__(
        self, logits: dict[str, FloatArray], retrieval: FloatArray, items: IntArray, seen: IntArray
    ) -> FloatArray:
        columns = [logits[RANKERS[0]], logits[RANKERS[1]], retrieval]
        if self.item_item is not None:
            columns.append(self.item_item.scores(seen, items))
        stacked = np.stack(columns, axis=1)
        (score,) = self.session.run(None, {"scores": stacked.astype(np.float32)})
        return np.asarray(score, dtype=np.float32).reshape(-1)


class NaiveRerank:
    """Policy and MMR re-rank; answers item ids, so only it and the ingress map ids."""

    def __init__(self, repository: Path, config: GraphConfig) -> None:
        versions = _versions(repository, config)
        self.catalog = Catalog.load(_user_tower_dir(repository, versions))
        self.config = config.rerank
        self.deny = resolve_deny(self.catalog.item_index, config.rerank.deny_items)

    def __call__(self, items: IntArray, scores: FloatArray, k: int, seen: IntArray) -> list[str]:
        chosen, _ = rerank(
            items,
            scores,
            k,
            catalog_genres=self.catalog.item_genres,
            genre_names=self.catalog.genre_names,
            config=self.config,
            exclude=seen,
            deny=self.deny,
        )
        return [self.catalog.item_ids[int(i)] for i in chosen]


class NaiveFeatures:
    """The ingress: looks the user up, then awaits each stage's deployment in turn."""

    def __init__(
        self,
        retrieval: DeploymentHandle[Any],
        ranking: DeploymentHandle[Any],
        combiner: DeploymentHandle[Any],
        reranker: DeploymentHandle[Any],
        repository: Path,
        config: GraphConfig,
    ) -> None:
        versions = _versions(repository, config)
        self.catalog = Catalog.load(_user_tower_dir(repository, versions))
        self.features = EmbeddedFeatureStore(self.catalog)
        self.retrieval = retrieval
        self.ranking = ranking
        self.combiner = combiner
        self.reranker = reranker

    @naive_api.post(NAIVE_ROUTE)
    async def recommend(self, body: NaiveRecommendBody) -> dict[str, list[str]]:
        user = self.features.user(body.user_id)
        if user is None:
            popular = self.catalog.popular_for({}, body.k)
            return {"items": [self.catalog.item_ids[int(i)] for i in popular]}
        items, retrieval = await self.retrieval.remote(
            user.model_id, user.dense, user.history, user.seen
        )
        logits = await self.ranking.remote(user.model_id, user.dense, user.history, items)
        scores = await self.combiner.remote(logits, retrieval, items, user.seen)
        chosen: list[str] = await self.reranker.remote(items, scores, body.k, user.seen)
        return {"items": chosen}


#: Made a FastAPI class-based view at import, so every process that imports this module
#: (the driver and each replica) turns the route's ``self`` into the replica, not a query.
NaiveIngressView = serve.ingress(naive_api)(NaiveFeatures)

#: Serve's default is one CPU per replica; five of those do not fit on a 2-CPU Ray cluster,
#: so each asks for a fifth. This is the only setting changed from the defaults.
_NAIVE_ACTOR = {"num_cpus": 0.2}


def build_naive_app(repository: Path, config: GraphConfig = DEFAULT_CONFIG) -> Application:
    """Five deployments, ingress first, bound as a user would bind them; serve it with
    ``serve.run(build_naive_app(repo), route_prefix="/")`` and POST to :data:`NAIVE_ROUTE`."""
    repository = Path(repository).resolve()

    def stage(cls: type) -> Deployment:
        return serve.deployment(ray_actor_options=dict(_NAIVE_ACTOR))(cls)

    ingress = serve.deployment(name="NaiveFeatures", ray_actor_options=dict(_NAIVE_ACTOR))(
        NaiveIngressView
    )
    app: Application = ingress.bind(
        stage(NaiveRetrieval).bind(repository, config),
        stage(NaiveRanking).bind(repository, config),
        stage(NaiveCombiner).bind(repository, config),
        stage(NaiveRerank).bind(repository, config),
        repository,
        config,
    )
    return app
