"""The online feature interface: what retrieval and ranking read about a user, and where it
comes from. Stores are swappable behind :class:`FeatureStore`; the embedded one serves the
build's own tables, so online features equal the ones the models were trained and evaluated
on, and :class:`CachedFeatureStore` puts a TTL cache in front of any store."""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

import numpy as np

from contract.arrays import FloatArray, IntArray
from contract.features import HISTORY_LENGTH
from contract.graph_config import CacheConfig
from inference.graph.catalog import Catalog


@dataclass(frozen=True, eq=False)
class UserFeatures:
    """One user's model inputs. ``model_id`` is the tower's id (index + 1; 0 = unknown)."""

    index: int | None
    model_id: int
    dense: FloatArray  # (user_dim,)
    history: IntArray  # (HISTORY_LENGTH,) item ids (+1), most recent first, 0 = pad
    seen: IntArray  # item indices, excluded from results

    @property
    def known(self) -> bool:
        return self.index is not None

    @classmethod
    def cold(cls, user_dim: int) -> UserFeatures:
        """Inputs for a user no store knows: the towers read id 0 and empty history as such."""
        return cls(
            index=None,
            model_id=0,
            dense=np.zeros(user_dim, dtype=np.float32),
            history=np.zeros(HISTORY_LENGTH, dtype=np.int64),
            seen=np.zeros(0, dtype=np.int64),
        )


class FeatureStore(Protocol):
    @property
    def kind(self) -> str:
        """A short name for health and metrics (``embedded``, ``redis``...)."""
        ...

    def user(self, user_id: str) -> UserFeatures | None:
        """The user's features, or None for a user the store does not know."""
        ...


class EmbeddedFeatureStore:
    """Serves from the catalog's tables in memory: no network hop, nothing to go stale."""

    kind = "embedded"

    def __init__(self, catalog: Catalog) -> None:
        self._catalog = catalog

    def user(self, user_id: str) -> UserFeatures | None:
        index = self._catalog.user_index.get(user_id)
        if index is None:
            return None
        features = self._catalog.features
        return UserFeatures(
            index=index,
            model_id=index + 1,
            dense=features.user_dense[index],
            history=features.history[index],
            seen=self._catalog.seen(index),
        )


class CachedFeatureStore:
    """A TTL cache in front of ``store``, bounded by ``max_entries`` and by ``max_bytes`` of
    estimated size (:func:`entry_bytes`), oldest evicted first.

    Unknown users are cached too, so a flood of requests for one unknown id costs one store
    lookup per TTL. The store is called outside the lock: a slow lookup does not block hits
    for other users (two threads missing on one user may both ask the store)."""

    def __init__(
        self,
        store: FeatureStore,
        config: CacheConfig,
        clock: Callable[[], float] = time.monotonic,
        on_lookup: Callable[[bool], None] | None = None,
    ) -> None:
        self._store = store
        self._ttl_s = config.ttl_s
        self._max_entries = config.max_entries
        self._max_bytes = config.max_bytes
        self._bytes = 0
        self._clock = clock
        self._on_lookup = on_lookup
        self._entries: OrderedDict[str, tuple[float, UserFeatures | None]] = OrderedDict()
        self._lock = threading.Lock()
        self.hits = 0
        self.misses = 0

    @property
    def kind(self) -> str:
        """The backing store's kind: the cache changes latency, not where features come from."""
        return self._store.kind

    def user(self, user_id: str) -> UserFeatures | None:
        now = self._clock()
        with self._lock:
            entry = self._entries.get(user_id)
            hit = entry is not None and now < entry[0]
            if hit:
                self.hits += 1
            else:
                self.misses += 1
        if self._on_lookup is not None:
            self._on_lookup(hit)
        if entry is not None and hit:
            return entry[1]
        value = self._store.user(user_id)
        if self._ttl_s > 0:
            self._put(user_id, now + self._ttl_s, value)
        return value

    def __len__(self) -> int:
        with self._lock:
            return len(self._entries)

    @property
    def size_bytes(self) -> int:
        """The estimated size of what is cached."""
        return self._bytes

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()
            self._bytes = 0

    def _put(self, user_id: str, expires: float, value: UserFeatures | None) -> None:
        size = entry_bytes(user_id, value)
        if size > self._max_bytes:
            return  # larger than the whole cache: not worth evicting everything for
        with self._lock:
            old = self._entries.pop(user_id, None)
            if old is not None:
                self._bytes -= entry_bytes(user_id, old[1])
            self._entries[user_id] = (expires, value)
            self._bytes += size
            while len(self._entries) > self._max_entries or self._bytes > self._max_bytes:
                evicted, (_, features) = self._entries.popitem(last=False)
                self._bytes -= entry_bytes(evicted, features)


#: Python's per-entry cost beyond the id and arrays (dict slot, tuple, dataclass, array
#: headers): tracemalloc on CPython 3.11 measured about 1.5 KB per cached known user with
#: 30 dense features and 50 history and 40 seen items, and this estimate is at least that.
ENTRY_OVERHEAD_BYTES = 650


def entry_bytes(user_id: str, value: UserFeatures | None) -> int:
    """Estimated memory of one cache entry."""
    size = ENTRY_OVERHEAD_BYTES + len(user_id.encode("utf-8", "surrogatepass"))
    if value is not None:
        size += value.dense.nbytes + value.history.nbytes + value.seen.nbytes
    return size
