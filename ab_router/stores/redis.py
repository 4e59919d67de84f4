"""Redis Streams event store: the production backend.

Why Redis Streams rather than PostgreSQL:

* The log is append-only and read in order; a stream (``XADD``/``XRANGE``) is exactly that,
  with no table bloat, vacuum or index maintenance on the write path.
* The analysis job can consume new events with a consumer group (``XREADGROUP`` + ``XACK``),
  getting at-least-once delivery and resumable progress without a hand-rolled offsets table.
* Durability comes from the AOF with ``appendfsync always``: Redis fsyncs the AOF before it
  replies to the client, so a reply is an acknowledgement of a durable write. The store checks
  this configuration when it connects and refuses to run without it.
* Redis is already the feature store's production store, so this adds no new system to
  operate, back up, or page on.

Layout per experiment ``X`` (every key carries the hash tag ``{X}`` so one experiment's keys
share a cluster slot and a Lua script may touch them all):

* ``ab:{X}:exposures`` / ``ab:{X}:outcomes`` -- streams, one entry per event, field ``e`` holds
  the event's JSON;
* ``ab:{X}:seen:exposure`` / ``ab:{X}:seen:outcome`` -- hashes of event ids already written
  (``HSETNX``, the hash form of ``SET NX``: one key per experiment rather than one per event,
  and deleted with the experiment);
* ``ab:{X}:units`` -- hash unit id -> variant of its first exposure, for the "never exposed"
  check on outcomes.

Each write is one Lua script, which Redis runs atomically and logs to the AOF as one unit: the
dedup check, the ``XADD`` and the bookkeeping either all happen or none do, so a client that
retries a write whose reply it lost can never append the event twice. (``MULTI/EXEC`` could not
express "append only if not seen", which needs the check's result inside the transaction.)
"""

from __future__ import annotations

import redis

from ab_router.errors import EventError, StoreError
from ab_router.events import Exposure, Outcome, Summary, summarize

__all__ = ["RedisEventStore"]

# KEYS: seen hash, stream, units hash.  ARGV: event id, event JSON, unit id, variant.
_RECORD_EXPOSURE = """
if redis.call('HSETNX', KEYS[1], ARGV[1], '1') == 0 then
  return 0
end
redis.call('XADD', KEYS[2], '*', 'e', ARGV[2])
redis.call('HSETNX', KEYS[3], ARGV[3], ARGV[4])
return 1
"""

# KEYS: seen hash, stream, units hash.  ARGV: event id, event JSON, unit id.
# Returns 1 written, 0 replay, -1 unit never exposed (nothing written).
_RECORD_OUTCOME = """
if redis.call('HEXISTS', KEYS[1], ARGV[1]) == 1 then
  return 0
end
if redis.call('HEXISTS', KEYS[3], ARGV[3]) == 0 then
  return -1
end
redis.call('HSET', KEYS[1], ARGV[1], '1')
redis.call('XADD', KEYS[2], '*', 'e', ARGV[2])
return 1
"""

_PAGE = 1000


def _key(experiment: str, suffix: str) -> str:
    return f"ab:{{{experiment}}}:{suffix}"


class RedisEventStore:
    """An :class:`~ab_router.events.EventStore` on Redis Streams.

    ``verify_durability`` (default on) reads the server's ``appendonly``/``appendfsync`` at
    connect time and raises :class:`StoreError` unless they are ``yes``/``always``: without
    them a reply does not mean durable. Turn it off only where ``CONFIG`` is disabled and the
    configuration is guaranteed by other means.
    """

    def __init__(self, url: str, *, verify_durability: bool = True) -> None:
        try:
            self._redis: redis.Redis = redis.Redis.from_url(url, decode_responses=True)
            if verify_durability:
                config = {str(k): str(v) for k, v in self._redis.config_get("append*").items()}
                if config.get("appendonly") != "yes" or config.get("appendfsync") != "always":
                    raise StoreError(
                        f"redis at {url} is not durable per write (appendonly="
                        f"{config.get('appendonly')!r}, appendfsync="
                        f"{config.get('appendfsync')!r}); need appendonly yes, appendfsync always"
                    )
            self._exposure_script = self._redis.register_script(_RECORD_EXPOSURE)
            self._outcome_script = self._redis.register_script(_RECORD_OUTCOME)
        except redis.RedisError as e:
            raise StoreError(f"cannot connect to event store {url}: {e}") from e

    def record_exposure(self, exposure: Exposure) -> bool:
        """Append ``exposure``; False (nothing written) if its id is already stored."""
        x = exposure.experiment
        try:
            written = self._exposure_script(
                keys=[_key(x, "seen:exposure"), _key(x, "exposures"), _key(x, "units")],
                args=[
                    exposure.event_id,
                    exposure.model_dump_json(),
                    exposure.unit_id,
                    exposure.variant,
                ],
            )
        except redis.RedisError as e:
            raise StoreError(f"cannot record exposure {exposure.event_id}: {e}") from e
        return int(written) == 1

    def record_outcome(self, outcome: Outcome) -> bool:
        """Append ``outcome``; EventError (nothing written) if the unit was never exposed."""
        x = outcome.experiment
        try:
            written = int(
                self._outcome_script(
                    keys=[_key(x, "seen:outcome"), _key(x, "outcomes"), _key(x, "units")],
                    args=[outcome.event_id, outcome.model_dump_json(), outcome.unit_id],
                )
            )
        except redis.RedisError as e:
            raise StoreError(f"cannot record outcome {outcome.event_id}: {e}") from e
        if written < 0:
            raise EventError(
                f"outcome {outcome.event_id}: unit {outcome.unit_id!r} was never exposed in"
                f" experiment {x!r}"
            )
        return written == 1

    def _read(self, stream: str) -> list[str]:
        """Every entry's JSON, paging with XRANGE so a long stream is not one huge reply."""
        out: list[str] = []
        start = "-"
        try:
            while True:
                entries = self._redis.xrange(stream, min=start, max="+", count=_PAGE) or []
                out.extend(str(fields["e"]) for _, fields in entries if fields)
                if len(entries) < _PAGE:
                    return out
                start = f"({entries[-1][0]!s}"
        except redis.RedisError as e:
            raise StoreError(f"cannot read {stream}: {e}") from e

    def exposures(self, experiment: str) -> list[Exposure]:
        """Every exposure of ``experiment`` in stream order."""
        return [
            Exposure.model_validate_json(raw) for raw in self._read(_key(experiment, "exposures"))
        ]

    def outcomes(self, experiment: str, metric: str | None = None) -> list[Outcome]:
        """Every outcome of ``experiment`` (of ``metric`` only, if given) in stream order."""
        parsed = (Outcome.model_validate_json(r) for r in self._read(_key(experiment, "outcomes")))
        return [o for o in parsed if metric is None or o.metric == metric]

    def summary(self, experiment: str, metric: str) -> Summary:
        """Per-variant, per-unit statistics; the semantics live in :func:`summarize`."""
        return summarize(self.exposures(experiment), self.outcomes(experiment, metric), metric)

    def close(self) -> None:
        """Close the connection pool."""
        try:
            self._redis.close()
        except redis.RedisError as e:
            raise StoreError(f"cannot close event store: {e}") from e
