"""The embedded feature store and the TTL cache in front of a store, with an injected clock."""

from __future__ import annotations

import threading
from pathlib import Path

import numpy as np
import pytest

from contract.features import HISTORY_LENGTH
from contract.graph_config import CacheConfig
from inference.graph.catalog import Catalog
from inference.graph.features import (
    CachedFeatureStore,
    EmbeddedFeatureStore,
    FeatureStore,
    UserFeatures,
    entry_bytes,
)
from tests.unit.inference.graph.test_catalog import write_build


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


class CountingStore:
    """Knows users ``a``..``e``; counts how often each id is asked for."""

    kind = "counting"

    def __init__(self) -> None:
        self.calls: dict[str, int] = {}

    def user(self, user_id: str) -> UserFeatures | None:
        self.calls[user_id] = self.calls.get(user_id, 0) + 1
        if user_id not in "abcde":
            return None
        index = "abcde".index(user_id)
        return UserFeatures(
            index=index,
            model_id=index + 1,
            dense=np.full(2, index, dtype=np.float32),
            history=np.zeros(HISTORY_LENGTH, dtype=np.int64),
            seen=np.zeros(0, dtype=np.int64),
        )


def cached(
    ttl_s: float = 10.0, max_entries: int = 100, max_bytes: int = 10**9
) -> tuple[CachedFeatureStore, CountingStore, Clock, list[bool]]:
    store, clock = CountingStore(), Clock()
    lookups: list[bool] = []
    cache = CachedFeatureStore(
        store,
        CacheConfig(ttl_s=ttl_s, max_entries=max_entries, max_bytes=max_bytes),
        clock=clock,
        on_lookup=lookups.append,
    )
    return cache, store, clock, lookups


def test_embedded_store_serves_the_catalog_tables(tmp_path: Path) -> None:
    catalog = Catalog.load(write_build(tmp_path, seen={7: [4, 1]}))
    store: FeatureStore = EmbeddedFeatureStore(catalog)
    assert store.kind == "embedded"
    features = store.user("u7")
    assert features is not None
    assert features.known
    assert (features.index, features.model_id) == (7, 8)
    np.testing.assert_array_equal(features.dense, catalog.features.user_dense[7])
    np.testing.assert_array_equal(features.history, catalog.features.history[7])
    assert features.history.shape == (HISTORY_LENGTH,)
    np.testing.assert_array_equal(features.seen, [4, 1])
    assert store.user("nobody") is None


def test_cold_features_use_the_unknown_id() -> None:
    cold = UserFeatures.cold(5)
    assert not cold.known
    assert cold.model_id == 0
    assert cold.dense.shape == (5,)
    assert not cold.dense.any()
    assert cold.history.shape == (HISTORY_LENGTH,)
    assert not cold.history.any()
    assert len(cold.seen) == 0


def test_repeated_lookups_hit_the_cache() -> None:
    cache, store, _, lookups = cached()
    first = cache.user("a")
    second = cache.user("a")
    assert first is second
    assert store.calls == {"a": 1}
    assert (cache.hits, cache.misses) == (1, 1)
    assert lookups == [False, True]
    assert cache.kind == "counting"


def test_entries_expire_after_the_ttl() -> None:
    cache, store, clock, _ = cached(ttl_s=10.0)
    cache.user("a")
    clock.now += 9.9
    cache.user("a")
    assert store.calls["a"] == 1
    clock.now += 0.2
    cache.user("a")
    assert store.calls["a"] == 2
    assert (cache.hits, cache.misses) == (1, 2)
    clock.now += 5.0  # the refetch restarted the TTL
    cache.user("a")
    assert store.calls["a"] == 2


def test_the_oldest_entry_is_evicted_first() -> None:
    cache, store, _, _ = cached(max_entries=2)
    for user in "abc":
        cache.user(user)
    assert len(cache) == 2
    cache.user("c")
    cache.user("b")
    assert store.calls == {"a": 1, "b": 1, "c": 1}
    cache.user("a")
    assert store.calls["a"] == 2


def test_the_cache_is_bounded_in_bytes_not_only_entries() -> None:
    """Long unknown ids: each entry is bigger, so fewer fit; the size never passes the bound."""
    one = entry_bytes("x" * 100, None)
    cache, store, _, _ = cached(max_entries=1000, max_bytes=3 * one)
    for n in range(50):
        cache.user(f"{n:03d}" + "x" * 97)
        assert cache.size_bytes <= 3 * one
    assert len(cache) == 3
    assert cache.size_bytes == 3 * one
    cache.user("a")  # a known user's entry holds arrays: bigger than an unknown one's
    assert entry_bytes("a", store.user("a")) > entry_bytes("a", None)
    assert cache.size_bytes <= 3 * one
    cache.clear()
    assert cache.size_bytes == 0


def test_an_entry_bigger_than_the_cache_is_not_cached() -> None:
    cache, store, _, _ = cached(max_bytes=10)
    cache.user("a")
    cache.user("a")
    assert (len(cache), store.calls["a"]) == (0, 2)


def test_unknown_users_are_cached_for_the_ttl() -> None:
    cache, store, clock, lookups = cached(ttl_s=5.0)
    assert cache.user("zz") is None
    assert cache.user("zz") is None
    assert store.calls == {"zz": 1}
    assert lookups == [False, True]
    clock.now += 6.0
    assert cache.user("zz") is None
    assert store.calls == {"zz": 2}


def test_a_zero_ttl_disables_caching() -> None:
    cache, store, _, lookups = cached(ttl_s=0.0)
    for _ in range(3):
        assert cache.user("b") is not None
    assert store.calls == {"b": 3}
    assert len(cache) == 0
    assert (cache.hits, cache.misses) == (0, 3)
    assert lookups == [False, False, False]


def test_clear_forgets_everything() -> None:
    cache, store, _, _ = cached()
    cache.user("a")
    cache.clear()
    cache.user("a")
    assert store.calls == {"a": 2}


@pytest.mark.timeout(30)
def test_counters_stay_exact_under_threads() -> None:
    cache, _, _, _ = cached(max_entries=3)
    per_thread, n_threads = 2000, 8

    def work(offset: int) -> None:
        for i in range(per_thread):
            cache.user("abcdef"[(i + offset) % 6])

    threads = [threading.Thread(target=work, args=(t,)) for t in range(n_threads)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert cache.hits + cache.misses == per_thread * n_threads
    assert len(cache) <= 3
