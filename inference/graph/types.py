"""What goes into and comes out of the graph, independent of the protocol that carried it."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

#: Marks the launcher's warm-up requests: answered like any other, never logged as an
#: experiment exposure (twenty made-up visits per start would skew every experiment).
WARMUP_HEADER = "cascade-warmup"
#: The POST paths admission control guards (the graph's API and the OIP routes), in the
#: ingress replica and in the HAProxy in front of it, and what a refusal says.
GUARDED_PATHS = ("/v1/", "/v2/")
OVERLOAD_MESSAGE = "overloaded: too many requests in flight, retry later"


@dataclass(frozen=True)
class RecommendRequest:
    """``user_id`` is the catalog's id (a string, as in the source data). ``context`` may carry
    demographics (``age``, ``gender``, ``occupation``) used for users the store does not know."""

    user_id: str
    k: int
    context: dict[str, str] = field(default_factory=dict)
    request_id: str | None = None


@dataclass(frozen=True)
class ScoredItem:
    item_id: str
    score: float
    title: str | None = None
    genres: tuple[str, ...] = ()


#: What a recommendation's scores can be: the combiner's probability (full quality), one
#: ranker's logit (the combiner fell back to it), the two-tower inner product (ranking fell
#: back to retrieval order) or 1/rank of a popularity list (cold start, or retrieval fell
#: back); each times the boost of any business rule that matched the item.
SCORE_SOURCES = ("combiner", "ranker_dcn", "ranker_mlp", "two_tower", "popularity")


@dataclass
class RecommendResponse:
    user_id: str
    items: list[ScoredItem]
    model_versions: dict[str, int]
    stages: list[str]
    fallbacks: list[str]
    known_user: bool
    latency_ms: float = 0.0
    stage_ms: dict[str, float] = field(default_factory=dict)
    assignment: dict[str, str] = field(default_factory=dict)
    #: What the items' scores are (:data:`SCORE_SOURCES`); items are in re-ranked order, so
    #: genre diversity and business rules may put a lower score above a higher one.
    score_source: str = "combiner"

    def to_dict(self) -> dict[str, Any]:
        return {
            "user_id": self.user_id,
            "items": [_item_dict(i) for i in self.items],
            "model_versions": dict(self.model_versions),
            "stages": list(self.stages),
            "fallbacks": list(self.fallbacks),
            "known_user": self.known_user,
            "score_source": self.score_source,
            "latency_ms": self.latency_ms,
            "stage_ms": dict(self.stage_ms),
            "assignment": dict(self.assignment),
        }


@dataclass(frozen=True)
class SimilarRequest:
    """Items like ``item_id`` (the catalog's id). ``user_id``, when given, names a user whose
    seen items are left out of the answer (an id the store does not know leaves out none)."""

    item_id: str
    k: int
    user_id: str | None = None
    request_id: str | None = None


@dataclass
class SimilarResponse:
    item_id: str
    items: list[ScoredItem]
    model_versions: dict[str, int]
    stages: list[str]
    fallbacks: list[str]
    known_item: bool
    latency_ms: float = 0.0
    stage_ms: dict[str, float] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {
            "item_id": self.item_id,
            "items": [_item_dict(i) for i in self.items],
            "model_versions": dict(self.model_versions),
            "stages": list(self.stages),
            "fallbacks": list(self.fallbacks),
            "known_item": self.known_item,
            "latency_ms": self.latency_ms,
            "stage_ms": dict(self.stage_ms),
        }


def _item_dict(item: ScoredItem) -> dict[str, Any]:
    return {
        "item_id": item.item_id,
        "score": item.score,
        "title": item.title,
        "genres": list(item.genres),
    }
