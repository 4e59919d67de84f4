"""The answer cache's key and bounds: what changes the ranked list changes the key."""

from __future__ import annotations

import dataclasses

import numpy as np

from contract.graph_config import AnswerCacheConfig
from inference.graph.answers import AnswerCache, answer_key
from inference.graph.features import UserFeatures


def _user(**changes: object) -> UserFeatures:
    base = UserFeatures(
        index=3,
        model_id=4,
        dense=np.arange(5, dtype=np.float32),
        history=np.array([7, 2, 0], dtype=np.int64),
        seen=np.array([1, 6], dtype=np.int64),
    )
    return dataclasses.replace(base, **changes)  # type: ignore[arg-type]


def test_the_key_changes_with_the_versions_and_every_model_input() -> None:
    versions = {"user_tower": 1, "combiner": 2}
    key = answer_key(_user(), versions)
    assert answer_key(_user(), dict(versions)) == key
    assert answer_key(_user(), {**versions, "combiner": 3}) != key  # a rollout
    for change in (
        {"model_id": 5},
        {"dense": np.arange(5, dtype=np.float32) + 1},
        {"history": np.array([9, 7, 2], dtype=np.int64)},  # a new event
        {"seen": np.array([1, 6, 8], dtype=np.int64)},
    ):
        assert answer_key(_user(**change), versions) != key, change


def test_the_cache_keeps_the_best_and_evicts_the_oldest() -> None:
    lookups: list[bool] = []
    cache = AnswerCache(
        AnswerCacheConfig(ttl_s=10.0, max_entries=2, keep=2), lambda: 0.0, lookups.append
    )
    items = np.array([10, 11, 12], dtype=np.int64)
    cache.put(b"a", items, np.array([0.1, 0.9, 0.5], dtype=np.float32))
    ranked = cache.get(b"a")
    assert ranked is not None
    assert ranked.items.tolist() == [11, 12]
    assert not ranked.items.flags.writeable
    cache.put(b"b", items, np.zeros(3, dtype=np.float32))
    cache.put(b"c", items, np.zeros(3, dtype=np.float32))
    assert cache.get(b"a") is None
    assert len(cache) == 2
    assert lookups == [True, False]
    off = AnswerCache(AnswerCacheConfig())
    off.put(b"a", items, np.zeros(3, dtype=np.float32))
    assert len(off) == 0
