"""The last stage: policy (seen items, deny-list, business rules) and genre diversity (MMR)
over the ranked candidates.

Pure numpy over item indices, so it costs well under a millisecond for a thousand candidates
and is the same code whatever served the earlier stages.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import numpy.typing as npt

from contract.arrays import BoolArray, FloatArray, IntArray
from contract.graph_config import RerankConfig


def resolve_deny(item_index: Mapping[str, int], deny_items: Sequence[str]) -> IntArray:
    """The deny-list as item indices; ids the catalog does not have are ignored (a deny-list
    may name items a newer or older catalog lacks)."""
    found = [item_index[i] for i in deny_items if i in item_index]
    return np.array(found, dtype=np.int64)


def unknown_genres(config: RerankConfig, genre_names: Sequence[str]) -> list[str]:
    """Genres the rules name that the catalog lacks; :func:`rerank` ignores them, so check at
    startup to catch a misspelt rule."""
    known = set(genre_names)
    named = (g for rule in config.rules for g in (*rule.boost_genres, *rule.exclude_genres))
    return sorted({g for g in named if g not in known})


def rerank(
    items: IntArray,
    scores: FloatArray,
    k: int,
    *,
    catalog_genres: BoolArray,
    genre_names: Sequence[str],
    config: RerankConfig,
    exclude: IntArray | None = None,
    deny: IntArray | None = None,
) -> tuple[IntArray, FloatArray]:
    """At most ``k`` item indices, best first, with their (boosted) scores.

    Drops ``exclude`` and ``deny`` items, applies the rules in order, then selects by MMR:
    ``lambda * relevance - (1 - lambda) * max Jaccard genre similarity to those already
    chosen``, relevance being the scores min-max normalized over the candidates left.
    ``mmr_lambda == 1`` gives the top ``k`` by score."""
    items = np.asarray(items)
    scores = np.asarray(scores)
    if k < 1:
        raise ValueError(f"k must be at least 1, got {k}")
    if items.ndim != 1 or items.shape != scores.shape:
        raise ValueError(f"items {items.shape} and scores {scores.shape} must be equal 1-D shapes")
    if catalog_genres.ndim != 2 or catalog_genres.shape[1] != len(genre_names):
        raise ValueError(
            f"catalog_genres {catalog_genres.shape} does not match {len(genre_names)} genre names"
        )
    if len(items) and (items.min() < 0 or items.max() >= catalog_genres.shape[0]):
        raise ValueError(f"item indices must lie in 0..{catalog_genres.shape[0] - 1}")
    if not np.all(np.isfinite(scores)):
        raise ValueError("scores must be finite")

    items, first = np.unique(items.astype(np.int64), return_index=True)
    relevance = scores[first].astype(np.float64)
    keep = np.ones(len(items), dtype=np.bool_)
    for dropped in (exclude, deny):
        if dropped is not None and len(dropped):
            keep &= ~np.isin(items, dropped)
    column = {name: g for g, name in enumerate(genre_names)}
    cap: int | None = None
    for rule in config.rules:
        if rule.exclude_genres:
            keep &= ~_any_genre(catalog_genres, items, rule.exclude_genres, column)
        if rule.boost_genres and rule.factor != 1.0:
            boosted = _any_genre(catalog_genres, items, rule.boost_genres, column)
            relevance = np.where(boosted, relevance * rule.factor, relevance)
        if rule.max_per_genre is not None:
            cap = rule.max_per_genre if cap is None else min(cap, rule.max_per_genre)

    items, relevance = items[keep], relevance[keep]
    order = np.argsort(-relevance, kind="stable")
    items, relevance = items[order], relevance[order]
    chosen = _mmr(relevance, catalog_genres[items], k, config.mmr_lambda, cap)
    return items[chosen], relevance[chosen].astype(np.float32)


def _any_genre(
    catalog_genres: BoolArray, items: IntArray, names: Sequence[str], column: Mapping[str, int]
) -> BoolArray:
    columns = [column[n] for n in names if n in column]
    if not columns:
        return np.zeros(len(items), dtype=np.bool_)
    return np.asarray(catalog_genres[items][:, columns].any(axis=1), dtype=np.bool_)


def _mmr(
    relevance: npt.NDArray[np.float64],
    genres: BoolArray,
    k: int,
    mmr_lambda: float,
    cap: int | None,
) -> IntArray:
    """Positions picked greedily; candidates come sorted by relevance, so ties go to the
    better-scored one and ``mmr_lambda == 1`` reproduces that order."""
    n = len(relevance)
    low, high = (relevance[-1], relevance[0]) if n else (0.0, 0.0)
    normalized = (relevance - low) / (high - low) if high > low else np.ones(n)
    gain = mmr_lambda * normalized
    penalty = 1.0 - mmr_lambda
    weight = genres.astype(np.float64)
    sizes = weight.sum(axis=1)
    max_sim = np.zeros(n)
    per_genre = np.zeros(genres.shape[1], dtype=np.int64)
    chosen: list[int] = []
    while len(chosen) < k and n:
        objective = gain - penalty * max_sim if penalty else gain
        pick = int(np.argmax(objective))
        if objective[pick] == -np.inf:
            break
        chosen.append(pick)
        gain[pick] = -np.inf
        if cap is not None:
            per_genre += genres[pick]
            for full in np.flatnonzero(genres[pick] & (per_genre >= cap)):
                gain[genres[:, full]] = -np.inf
        if penalty and sizes[pick] > 0:
            inter = weight @ weight[pick]
            np.maximum(max_sim, inter / (sizes + sizes[pick] - inter), out=max_sim)
    return np.array(chosen, dtype=np.int64)
