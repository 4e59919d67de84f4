"""A cache of ranked answers: the candidates and final scores of a full-quality answer, kept
so the user's next request within ``ttl_s`` skips retrieval and ranking and is re-ranked
(the cheap, per-request part: ``k``, diversity, rules) from them.

The key is what determines the ranked list: the served model versions and a digest of the
user's model inputs (tower id, dense features, history, seen items). A new feature value or
a rollout of any model makes a new key, so nothing is ever flushed; old entries leave by TTL
and size. Only answers without a fallback are kept: a degraded answer must not outlive the
fault that caused it. One cache per recommender (base config or experiment variant), so two
configurations never share entries.
"""

from __future__ import annotations

import hashlib
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Mapping
from dataclasses import dataclass

import numpy as np

from contract.arrays import FloatArray, IntArray
from contract.graph_config import AnswerCacheConfig
from inference.graph.features import UserFeatures


@dataclass(frozen=True, eq=False)
class Ranked:
    """A ranked answer before re-rank: items best first and their scores."""

    items: IntArray
    scores: FloatArray


def answer_key(user: UserFeatures, versions: Mapping[str, int]) -> bytes:
    """What determines a user's ranked candidates, digested."""
    digest = hashlib.blake2b(digest_size=16)
    digest.update(repr(sorted(versions.items())).encode())
    digest.update(np.int64(user.model_id).tobytes())
    for array in (user.dense, user.history, user.seen):
        digest.update(np.ascontiguousarray(array).tobytes())
        digest.update(b"|")
    return digest.digest()


class AnswerCache:
    """Thread-safe TTL cache of :class:`Ranked` answers, the oldest evicted past
    ``max_entries``; ``on_lookup(hit)`` counts each lookup."""

    def __init__(
        self,
        config: AnswerCacheConfig,
        clock: Callable[[], float] = time.monotonic,
        on_lookup: Callable[[bool], None] | None = None,
    ) -> None:
        self.config = config
        self._clock = clock
        self._on_lookup = on_lookup
        self._entries: OrderedDict[bytes, tuple[float, Ranked]] = OrderedDict()
        self._lock = threading.Lock()

    @property
    def enabled(self) -> bool:
        return self.config.ttl_s > 0

    def get(self, key: bytes) -> Ranked | None:
        now = self._clock()
        with self._lock:
            entry = self._entries.get(key)
            if entry is not None and now >= entry[0]:
                del self._entries[key]
                entry = None
        if self._on_lookup is not None:
            self._on_lookup(entry is not None)
        return None if entry is None else entry[1]

    def put(self, key: bytes, items: IntArray, scores: FloatArray) -> None:
        """Keep the ``keep`` best of a full-quality answer's ranked candidates."""
        if not self.enabled:
            return
        order = np.argsort(-scores, kind="stable")[: self.config.keep]
        ranked = Ranked(items[order].copy(), scores[order].astype(np.float32))
        ranked.items.setflags(write=False)
        ranked.scores.setflags(write=False)
        with self._lock:
            self._entries[key] = (self._clock() + self.config.ttl_s, ranked)
            self._entries.move_to_end(key)
            while len(self._entries) > self.config.max_entries:
                self._entries.popitem(last=False)

    def __len__(self) -> int:
        with self._lock:
            return len(self._entries)
