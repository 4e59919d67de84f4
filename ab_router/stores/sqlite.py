"""SQLite event store: the single-host backend for tests, local runs and small deployments.

Why these settings:

* ``journal_mode=WAL`` lets readers (the analysis) run while a writer appends, and makes each
  commit one sequential append to the WAL file.
* ``synchronous=FULL`` fsyncs the WAL on every commit, so a committed (acknowledged) event
  survives a process kill *and* a power loss; ``NORMAL`` would be crash-safe for the process
  but may lose the last commits on power loss, which breaks "acknowledged means durable".
* ``event_id`` is the primary key and writes use ``INSERT OR IGNORE``: a replayed event is a
  no-op inside the database itself, so idempotency holds across processes and restarts,
  not just within one client.
* The index on ``(experiment, unit_id)`` serves the "was this unit exposed?" check on every
  outcome and the per-experiment reads.
* One connection guarded by a lock: sqlite3 connections are not safe to share across threads
  unsupervised, and SQLite serialises writers anyway, so a connection per thread would only
  add ``SQLITE_BUSY`` retries without adding write throughput.
"""

from __future__ import annotations

import sqlite3
import threading
from pathlib import Path

from ab_router.errors import EventError, StoreError
from ab_router.events import Exposure, Outcome, Summary, summarize

__all__ = ["SqliteEventStore"]

_SCHEMA = """
CREATE TABLE IF NOT EXISTS exposures (
    seq        INTEGER PRIMARY KEY AUTOINCREMENT,
    event_id   TEXT NOT NULL UNIQUE,
    experiment TEXT NOT NULL,
    variant    TEXT NOT NULL,
    unit_id    TEXT NOT NULL,
    timestamp  REAL NOT NULL,
    pre_metric REAL
);
CREATE INDEX IF NOT EXISTS exposures_experiment_unit ON exposures (experiment, unit_id);
CREATE TABLE IF NOT EXISTS outcomes (
    seq        INTEGER PRIMARY KEY AUTOINCREMENT,
    event_id   TEXT NOT NULL UNIQUE,
    experiment TEXT NOT NULL,
    unit_id    TEXT NOT NULL,
    metric     TEXT NOT NULL,
    value      REAL NOT NULL,
    timestamp  REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS outcomes_experiment_unit ON outcomes (experiment, unit_id);
"""


class SqliteEventStore:
    """An :class:`~ab_router.events.EventStore` in one SQLite file (WAL, ``synchronous=FULL``).

    ``event_id`` is unique per kind: the surrogate ``seq`` key keeps storage order for reads,
    and the ``UNIQUE`` constraint on ``event_id`` is what ``INSERT OR IGNORE`` deduplicates on.
    """

    def __init__(self, path: str | Path) -> None:
        self._lock = threading.Lock()
        try:
            # isolation_level=None: we issue BEGIN/COMMIT ourselves so a check-then-insert
            # (outcome needs an exposure) is one transaction, and nothing is left open.
            self._conn = sqlite3.connect(
                str(path), isolation_level=None, check_same_thread=False, timeout=30.0
            )
            mode = self._conn.execute("PRAGMA journal_mode=WAL").fetchone()[0]
            if str(mode).lower() != "wal" and str(path) != ":memory:":
                raise StoreError(f"SQLite refused WAL mode for {path} (got {mode!r})")
            self._conn.execute("PRAGMA synchronous=FULL")
            self._conn.executescript(_SCHEMA)
        except sqlite3.Error as e:
            raise StoreError(f"cannot open event store {path}: {e}") from e

    def record_exposure(self, exposure: Exposure) -> bool:
        """Append ``exposure`` and fsync; False (nothing written) if its id is already stored."""
        e = exposure
        with self._lock:
            try:
                cur = self._conn.execute(
                    "INSERT OR IGNORE INTO exposures"
                    " (event_id, experiment, variant, unit_id, timestamp, pre_metric)"
                    " VALUES (?, ?, ?, ?, ?, ?)",
                    (e.event_id, e.experiment, e.variant, e.unit_id, e.timestamp, e.pre_metric),
                )
            except sqlite3.Error as err:
                raise StoreError(f"cannot record exposure {e.event_id}: {err}") from err
            return cur.rowcount == 1

    def record_outcome(self, outcome: Outcome) -> bool:
        """Append ``outcome`` and fsync; EventError if the unit was never exposed.

        The exposure check and the insert share one ``BEGIN IMMEDIATE`` transaction, so no
        other writer can interleave between them.
        """
        o = outcome
        with self._lock:
            try:
                self._conn.execute("BEGIN IMMEDIATE")
                try:
                    if self._conn.execute(
                        "SELECT 1 FROM outcomes WHERE event_id = ?", (o.event_id,)
                    ).fetchone():
                        self._conn.execute("ROLLBACK")
                        return False
                    if not self._conn.execute(
                        "SELECT 1 FROM exposures WHERE experiment = ? AND unit_id = ? LIMIT 1",
                        (o.experiment, o.unit_id),
                    ).fetchone():
                        self._conn.execute("ROLLBACK")
                        raise EventError(
                            f"outcome {o.event_id}: unit {o.unit_id!r} was never exposed in"
                            f" experiment {o.experiment!r}"
                        )
                    self._conn.execute(
                        "INSERT INTO outcomes"
                        " (event_id, experiment, unit_id, metric, value, timestamp)"
                        " VALUES (?, ?, ?, ?, ?, ?)",
                        (o.event_id, o.experiment, o.unit_id, o.metric, o.value, o.timestamp),
                    )
                    self._conn.execute("COMMIT")
                except BaseException:
                    if self._conn.in_transaction:
                        self._conn.execute("ROLLBACK")
                    raise
            except sqlite3.Error as err:
                raise StoreError(f"cannot record outcome {o.event_id}: {err}") from err
            return True

    def exposures(self, experiment: str) -> list[Exposure]:
        """Every exposure of ``experiment`` in storage order."""
        with self._lock:
            try:
                rows = self._conn.execute(
                    "SELECT event_id, experiment, variant, unit_id, timestamp, pre_metric"
                    " FROM exposures WHERE experiment = ? ORDER BY seq",
                    (experiment,),
                ).fetchall()
            except sqlite3.Error as e:
                raise StoreError(f"cannot read exposures of {experiment}: {e}") from e
        return [
            Exposure(
                event_id=r[0],
                experiment=r[1],
                variant=r[2],
                unit_id=r[3],
                timestamp=r[4],
                pre_metric=r[5],
            )
            for r in rows
        ]

    def outcomes(self, experiment: str, metric: str | None = None) -> list[Outcome]:
        """Every outcome of ``experiment`` (of ``metric`` only, if given) in storage order."""
        sql = (
            "SELECT event_id, experiment, unit_id, metric, value, timestamp"
            " FROM outcomes WHERE experiment = ?"
        )
        params: tuple[str, ...] = (experiment,)
        if metric is not None:
            sql += " AND metric = ?"
            params = (experiment, metric)
        with self._lock:
            try:
                rows = self._conn.execute(sql + " ORDER BY seq", params).fetchall()
            except sqlite3.Error as e:
                raise StoreError(f"cannot read outcomes of {experiment}: {e}") from e
        return [
            Outcome(
                event_id=r[0],
                experiment=r[1],
                unit_id=r[2],
                metric=r[3],
                value=r[4],
                timestamp=r[5],
            )
            for r in rows
        ]

    def summary(self, experiment: str, metric: str) -> Summary:
        """Per-variant, per-unit statistics; the semantics live in :func:`summarize`."""
        return summarize(self.exposures(experiment), self.outcomes(experiment, metric), metric)

    def close(self) -> None:
        """Close the connection (WAL contents are already durable; closing checkpoints)."""
        with self._lock:
            try:
                self._conn.close()
            except sqlite3.Error as e:
                raise StoreError(f"cannot close event store: {e}") from e
