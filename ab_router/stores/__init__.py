"""Event-store backends: SQLite for one host (tests, local runs), Redis Streams for production.

The Redis backend is imported from :mod:`ab_router.stores.redis` explicitly so that code which
only needs SQLite does not import redis-py.
"""

from __future__ import annotations

from pathlib import Path

from ab_router.events import EventStore
from ab_router.stores.sqlite import SqliteEventStore

__all__ = ["SqliteEventStore", "open_store"]


def open_store(location: str) -> EventStore:
    """``redis://...`` opens the Redis Streams store; anything else is a SQLite file."""
    if location.startswith(("redis://", "rediss://", "unix://")):
        from ab_router.stores.redis import RedisEventStore

        return RedisEventStore(location)
    return SqliteEventStore(Path(location))
