"""The event log's contract, on the SQLite store: idempotency, the unexposed-unit check, the
per-unit summary, thread safety, and crash safety (SIGKILL mid-stream, then replay)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from ab_router.errors import EventError, StoreError
from ab_router.events import EventStore, Exposure, Outcome, VariantStats
from ab_router.stores.sqlite import SqliteEventStore

ROOT = Path(__file__).resolve().parents[3]


@pytest.fixture
def store(tmp_path: Path) -> Iterator[SqliteEventStore]:
    s = SqliteEventStore(tmp_path / "events.db")
    yield s
    s.close()


def exposure(i: int | str, unit: str, variant: str, ts: float = 0.0, exp: str = "x") -> Exposure:
    return Exposure(event_id=f"e{i}", experiment=exp, variant=variant, unit_id=unit, timestamp=ts)


def outcome(i: int | str, unit: str, value: float, metric: str = "m", exp: str = "x") -> Outcome:
    return Outcome(
        event_id=f"o{i}", experiment=exp, unit_id=unit, metric=metric, value=value, timestamp=1.0
    )


def test_sqlite_store_satisfies_the_protocol(store: SqliteEventStore) -> None:
    assert isinstance(store, EventStore)


def test_duplicate_event_ids_are_stored_once(store: SqliteEventStore) -> None:
    assert store.record_exposure(exposure(1, "u1", "a")) is True
    assert store.record_exposure(exposure(1, "u1", "a")) is False
    assert store.record_outcome(outcome(1, "u1", 2.0)) is True
    assert store.record_outcome(outcome(1, "u1", 2.0)) is False
    assert len(store.exposures("x")) == 1
    assert len(store.outcomes("x")) == 1
    assert store.summary("x", "m").variants == {"a": VariantStats(1, 1, 2.0, 4.0)}


def test_outcome_for_unexposed_unit_is_refused_and_not_stored(store: SqliteEventStore) -> None:
    store.record_exposure(exposure(1, "u1", "a", exp="other"))
    with pytest.raises(EventError, match="never exposed"):
        store.record_outcome(outcome(1, "u1", 1.0))  # exposed in "other", not in "x"
    assert store.outcomes("x") == []
    # The refused id is not burnt: once the unit is exposed the same event goes through.
    store.record_exposure(exposure(2, "u1", "a"))
    assert store.record_outcome(outcome(1, "u1", 1.0)) is True


def test_summary_is_per_unit_and_per_variant(store: SqliteEventStore) -> None:
    for i, (unit, variant) in enumerate([("u1", "a"), ("u2", "a"), ("u3", "b"), ("u4", "b")]):
        store.record_exposure(exposure(i, unit, variant, ts=float(i)))
    store.record_exposure(exposure(9, "u1", "a", ts=5.0))  # re-exposure, same variant
    # u1 has two outcomes (3 + 1 = 4 per unit), u2 none, u3 2, u4 5; plus another metric.
    for i, (unit, value) in enumerate([("u1", 3.0), ("u1", 1.0), ("u3", 2.0), ("u4", 5.0)]):
        store.record_outcome(outcome(i, unit, value))
    store.record_outcome(outcome("n", "u2", 100.0, metric="other"))
    summary = store.summary("x", "m")
    assert summary.conflicts == 0
    assert summary.variants == {
        "a": VariantStats(n_units=2, n_units_with_outcome=1, sum=4.0, sum_sq=16.0),
        "b": VariantStats(n_units=2, n_units_with_outcome=2, sum=7.0, sum_sq=29.0),
    }
    assert [o.metric for o in store.outcomes("x", "other")] == ["other"]
    assert len(store.outcomes("x")) == 5


def test_unit_exposed_to_two_variants_is_a_conflict_counted_once(store: SqliteEventStore) -> None:
    store.record_exposure(exposure(1, "u1", "b", ts=2.0))
    store.record_exposure(exposure(2, "u1", "a", ts=1.0))  # earlier timestamp: first exposure
    store.record_exposure(exposure(3, "u2", "b", ts=1.0))
    store.record_outcome(outcome(1, "u1", 1.0))
    summary = store.summary("x", "m")
    assert summary.conflicts == 1
    assert summary.variants == {"a": VariantStats(1, 1, 1.0, 1.0), "b": VariantStats(1, 0, 0, 0)}
    assert sum(v.n_units for v in summary.variants.values()) == 2


def write_concurrently(store: EventStore, threads: int, per_thread: int) -> int:
    """Events acknowledged as new when every thread writes its own range of exposures and
    outcomes and also replays its neighbour's, so duplicates race with originals."""
    written = [0] * threads

    def work(t: int) -> None:
        for rep in (t, (t + 1) % threads):
            for i in range(rep * per_thread, (rep + 1) * per_thread):
                written[t] += store.record_exposure(exposure(i, f"u{i}", "ab"[i % 2]))
                written[t] += store.record_outcome(outcome(i, f"u{i}", 1.0))

    pool = [threading.Thread(target=work, args=(t,)) for t in range(threads)]
    for th in pool:
        th.start()
    for th in pool:
        th.join()
    return sum(written)


def test_concurrent_writers_lose_nothing_and_double_count_nothing(
    store: SqliteEventStore,
) -> None:
    threads, per_thread = 8, 100
    n = threads * per_thread
    assert write_concurrently(store, threads, per_thread) == 2 * n
    assert len({e.event_id for e in store.exposures("x")}) == len(store.exposures("x")) == n
    assert len(store.outcomes("x")) == n
    stats = store.summary("x", "m").variants
    assert stats["a"].n_units + stats["b"].n_units == n
    assert stats["a"].sum + stats["b"].sum == n


def test_unopenable_path_is_a_store_error(tmp_path: Path) -> None:
    with pytest.raises(StoreError):
        SqliteEventStore(tmp_path / "missing-dir" / "events.db")


# --- crash safety -------------------------------------------------------------------------

# The writer a client would be: record exposure then outcome for ids 0..n-1, printing each id
# only after both calls returned (were acknowledged). argv: n, store target; the store class is
# chosen by the import line substituted below.
_WRITER = """
import sys
from ab_router.events import Exposure, Outcome
{open_store}
store = Store(sys.argv[2])
for i in range(int(sys.argv[1])):
    store.record_exposure(Exposure(event_id=f"x{{i}}", experiment="crash", variant="ab"[i % 2],
                                   unit_id=f"u{{i}}", timestamp=float(i)))
    store.record_outcome(Outcome(event_id=f"o{{i}}", experiment="crash", unit_id=f"u{{i}}",
                                 metric="m", value=float(i), timestamp=float(i)))
    print(i, flush=True)
store.close()
"""


def start_writer(open_store: str, target: str, n: int) -> subprocess.Popen[str]:
    """Start a writer child; ``open_store`` is an import binding the store class to ``Store``."""
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.Popen(
        [sys.executable, "-c", _WRITER.format(open_store=open_store), str(n), target],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=ROOT,
        env=env,
    )


def read_acks(proc: subprocess.Popen[str], count: int) -> list[int]:
    """Read ``count`` acknowledged ids from the writer (fails if it ends first)."""
    assert proc.stdout is not None
    acks: list[int] = []
    while len(acks) < count:
        line = proc.stdout.readline()
        if not line:
            err = proc.stderr.read() if proc.stderr else ""
            pytest.fail(f"writer ended after {len(acks)} acks: {err[-2000:]}")
        acks.append(int(line))
    return acks


def drain(proc: subprocess.Popen[str]) -> list[int]:
    """Acks the (now dead) writer printed before it died; they were acknowledged too."""
    out, _ = proc.communicate(timeout=30)
    return [int(x) for x in out.split()]


def check_exact(store: EventStore, n: int) -> None:
    """After a full replay every event is present exactly once."""
    exposures, outcomes = store.exposures("crash"), store.outcomes("crash")
    assert sorted(e.event_id for e in exposures) == sorted(f"x{i}" for i in range(n))
    assert sorted(o.event_id for o in outcomes) == sorted(f"o{i}" for i in range(n))
    stats = store.summary("crash", "m")
    assert stats.conflicts == 0
    assert sum(v.n_units for v in stats.variants.values()) == n
    assert sum(v.sum for v in stats.variants.values()) == sum(range(n))


def check_acked_present(store: EventStore, acked: list[int]) -> None:
    exposed = {e.event_id for e in store.exposures("crash")}
    observed = {o.event_id for o in store.outcomes("crash")}
    missing = [i for i in acked if f"x{i}" not in exposed or f"o{i}" not in observed]
    assert missing == [], f"acknowledged but lost: {missing[:10]}"


def run_replay(open_store: str, target: str, n: int) -> None:
    """Replay every event from 0, as a retrying client would, to completion."""
    proc = start_writer(open_store, target, n)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err[-2000:]
    assert out.split() == [str(i) for i in range(n)]


SQLITE_WRITER = "from ab_router.stores.sqlite import SqliteEventStore as Store"


def test_sqlite_sigkill_mid_stream_keeps_acknowledged_events_and_replay_is_exact(
    tmp_path: Path,
) -> None:
    n, kill_after = 1000, 60
    db = str(tmp_path / "crash.db")
    writer = start_writer(SQLITE_WRITER, db, n)
    try:
        acked = read_acks(writer, kill_after)
    finally:
        writer.send_signal(signal.SIGKILL)
    acked += drain(writer)
    assert writer.returncode == -signal.SIGKILL
    assert kill_after <= len(acked) < n, "the kill must land mid-stream"

    store = SqliteEventStore(db)
    try:
        check_acked_present(store, acked)
        run_replay(SQLITE_WRITER, db, n)
        check_exact(store, n)
    finally:
        store.close()
