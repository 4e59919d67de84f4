"""Typed configuration of one recommendation graph: budgets, candidate counts, re-rank policy,
cache and admission limits. Defaults are the reference design's; every field can be set per
graph (and per experiment variant) from YAML or JSON.

Defined once, here: the data plane runs it, and the operator derives a graph's config from
it, takes its resources' defaults from it and checks experiment variants' overrides with it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, model_validator

from contract.names import SIMILAR_ITEMS


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class StageBudgets(_Strict):
    """Milliseconds each stage may take, and the whole request. A stage gets the smaller of
    its own budget and what is left of the end-to-end one."""

    retrieval_ms: float = Field(15.0, gt=0)
    ranking_ms: float = Field(25.0, gt=0)
    rerank_ms: float = Field(10.0, gt=0)
    #: The similar-items request's one stage (neighbours and embeddings, then re-rank).
    similar_ms: float = Field(10.0, gt=0)
    total_ms: float = Field(50.0, gt=0)

    @model_validator(mode="after")
    def _total_covers_a_stage(self) -> StageBudgets:
        stages = (self.retrieval_ms, self.ranking_ms, self.rerank_ms, self.similar_ms)
        if self.total_ms < max(stages):
            raise ValueError("total_ms must be at least the largest stage budget")
        return self


class BusinessRule(_Strict):
    """One rule applied at re-rank. ``boost_genres`` multiplies the score of items in those
    genres by ``factor``; ``max_per_genre`` caps how many results share one genre;
    ``exclude_genres`` removes items of those genres."""

    name: str
    boost_genres: tuple[str, ...] = ()
    factor: float = Field(1.0, gt=0)
    max_per_genre: int | None = Field(None, ge=1)
    exclude_genres: tuple[str, ...] = ()


class RerankConfig(_Strict):
    #: MMR trade-off: 1.0 ranks by relevance only, 0.0 by genre novelty only.
    mmr_lambda: float = Field(0.8, ge=0.0, le=1.0)
    #: Item ids (as in the catalog) never recommended: the policy deny-list.
    deny_items: tuple[str, ...] = ()
    rules: tuple[BusinessRule, ...] = ()


class CacheConfig(_Strict):
    """TTL cache in front of the feature store (user features and histories)."""

    ttl_s: float = Field(60.0, ge=0)  # 0 disables the cache
    max_entries: int = Field(100_000, ge=1)
    #: Bound on the cached features' size (ids, arrays and per-entry overhead, estimated):
    #: entries alone do not bound memory when an entry's size varies.
    max_bytes: int = Field(64 * 1024 * 1024, ge=1)


class AnswerCacheConfig(_Strict):
    """Ranked candidates of full-quality answers, kept per user for ``ttl_s`` (0: off) and
    re-ranked per request, so a user who asks again within it gets the same answer without
    retrieval or ranking. Keyed by the user's features and the served model versions, so a new
    feature value or a rollout is a new key: nothing to flush."""

    ttl_s: float = Field(0.0, ge=0)
    max_entries: int = Field(20_000, ge=1)
    #: Candidates kept per answer, best first: enough for re-rank to pick any ``k`` up to
    #: ``max_k`` with room for genre diversity.
    keep: int = Field(200, ge=1)


class AdmissionConfig(_Strict):
    """Past ``max_in_flight`` requests in one ingress replica, new ones get 503 at once."""

    max_in_flight: int = Field(64, ge=1)
    retry_after_s: int = Field(1, ge=0)
    max_body_bytes: int = Field(64 * 1024, ge=256)


#: Stages a fault can slow down (re-rank is in-process arithmetic, well under its budget).
STAGES = ("retrieval", "ranking", "similar")


class FaultConfig(_Strict):
    """Injected faults for drills and tests: each named stage sleeps this long before working,
    as a slow dependency would. Empty in production."""

    delay_ms: dict[str, float] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _known_stages(self) -> FaultConfig:
        unknown = sorted(set(self.delay_ms) - set(STAGES))
        if unknown:
            raise ValueError(f"unknown stage(s) {unknown}; stages are {list(STAGES)}")
        if any(v < 0 for v in self.delay_ms.values()):
            raise ValueError("delays must be >= 0")
        return self


class GraphConfig(_Strict):
    """One graph: what it serves and how it degrades."""

    name: str = "recommender"
    candidates: int = Field(1000, ge=1, le=10_000)
    #: How many candidates the similar-items stage gathers by embedding (besides the query
    #: item's neighbours) before re-rank.
    similar_candidates: int = Field(200, ge=1, le=10_000)
    default_k: int = Field(10, ge=1)
    max_k: int = Field(100, ge=1)
    budgets: StageBudgets = StageBudgets()
    rerank: RerankConfig = RerankConfig()
    cache: CacheConfig = CacheConfig()
    answer_cache: AnswerCacheConfig = AnswerCacheConfig()
    admission: AdmissionConfig = AdmissionConfig()
    #: Model -> version to serve; absent models serve the latest loaded version.
    model_versions: dict[str, int] = Field(default_factory=dict)
    #: Ranking batches concurrent requests: at most this many per batch, waiting this long.
    max_batch_requests: int = Field(8, ge=1)
    #: Under load ranking scores only as many of a request's candidates as fit its budget,
    #: but never fewer than this.
    min_ranked: int = Field(100, ge=1)
    #: How many of the merged candidates, best by the pre-ranker's score, go on to the
    #: rankers: None, the build's choice (the smallest head its quality gate passed); 0, all.
    ranking_head: int | None = Field(None, ge=0)
    batch_wait_ms: float = Field(1.0, ge=0)
    faults: FaultConfig = FaultConfig()

    @model_validator(mode="after")
    def _name_is_free(self) -> GraphConfig:
        if self.name == SIMILAR_ITEMS:
            raise ValueError(f"name: {SIMILAR_ITEMS!r} is the graph's similar-items model")
        return self

    @model_validator(mode="after")
    def _k_bounds(self) -> GraphConfig:
        if self.default_k > self.max_k:
            raise ValueError("default_k must not exceed max_k")
        if self.max_k > self.candidates:
            raise ValueError("max_k must not exceed candidates")
        return self

    def with_overrides(self, overrides: dict[str, Any]) -> GraphConfig:
        """This config with nested fields replaced (an experiment variant's parameters);
        validated as a whole, so a bad override fails naming its field."""
        merged = _merge(self.model_dump(), overrides)
        return GraphConfig.model_validate(merged)


def _merge(base: dict[str, Any], overrides: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in overrides.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = _merge(out[key], value)
        else:
            out[key] = value
    return out


def load_graph_config(path: Path | None) -> GraphConfig:
    """The config in a YAML or JSON file, or the defaults when ``path`` is None."""
    if path is None:
        return GraphConfig()
    import yaml

    data = yaml.safe_load(Path(path).read_text()) or {}
    return GraphConfig.model_validate(data)
