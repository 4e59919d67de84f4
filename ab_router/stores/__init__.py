"""Event-store backends: SQLite for one host (tests, local runs), Redis Streams for production.

The Redis backend is imported from :mod:`ab_router.stores.redis` explicitly so that code which
only needs SQLite does not import redis-py.
"""

from __future__ import annotations

from ab_router.stores.sqlite import SqliteEventStore

__all__ = ["SqliteEventStore"]
