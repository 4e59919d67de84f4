"""The event log's contract against a real ``redis-server`` (AOF, ``appendfsync always``):
idempotency, the unexposed-unit check, the summary, concurrent writers, a writer SIGKILLed
mid-stream, and a redis-server SIGKILLed mid-stream and restarted from its AOF."""

from __future__ import annotations

import signal
from collections.abc import Iterator
from pathlib import Path

import pytest

from ab_router.errors import EventError, StoreError
from ab_router.events import EventStore, VariantStats
from ab_router.stores.redis import RedisEventStore
from tests.integration.redis_server import RedisServer, free_port
from tests.unit.ab_router.test_events import (
    check_acked_present,
    check_exact,
    drain,
    exposure,
    outcome,
    read_acks,
    run_replay,
    start_writer,
    write_concurrently,
)

pytestmark = pytest.mark.integration

REDIS_WRITER = "from ab_router.stores.redis import RedisEventStore as Store"


@pytest.fixture
def server(tmp_path: Path) -> Iterator[RedisServer]:
    with RedisServer(tmp_path / "redis") as s:
        yield s


@pytest.fixture
def store(server: RedisServer) -> Iterator[RedisEventStore]:
    s = RedisEventStore(server.url)
    yield s
    s.close()


def test_redis_store_satisfies_the_protocol(store: RedisEventStore) -> None:
    assert isinstance(store, EventStore)


def test_duplicate_event_ids_are_stored_once(store: RedisEventStore) -> None:
    assert store.record_exposure(exposure(1, "u1", "a")) is True
    assert store.record_exposure(exposure(1, "u1", "a")) is False
    assert store.record_outcome(outcome(1, "u1", 2.0)) is True
    assert store.record_outcome(outcome(1, "u1", 2.0)) is False
    assert [e.event_id for e in store.exposures("x")] == ["e1"]
    assert [o.event_id for o in store.outcomes("x")] == ["o1"]
    assert store.summary("x", "m").variants == {"a": VariantStats(1, 1, 2.0, 4.0)}


def test_outcome_for_unexposed_unit_is_refused_and_not_stored(store: RedisEventStore) -> None:
    store.record_exposure(exposure(1, "u1", "a", exp="other"))
    with pytest.raises(EventError, match="never exposed"):
        store.record_outcome(outcome(1, "u1", 1.0))
    assert store.outcomes("x") == []
    store.record_exposure(exposure(2, "u1", "a"))
    assert store.record_outcome(outcome(1, "u1", 1.0)) is True


def test_summary_and_conflicts(store: RedisEventStore) -> None:
    for i, (unit, variant) in enumerate([("u1", "a"), ("u2", "a"), ("u3", "b"), ("u4", "b")]):
        store.record_exposure(exposure(i, unit, variant, ts=float(i)))
    store.record_exposure(exposure(9, "u4", "a", ts=9.0))  # u4 also saw "a": a conflict
    for i, (unit, value) in enumerate([("u1", 3.0), ("u1", 1.0), ("u3", 2.0), ("u4", 5.0)]):
        store.record_outcome(outcome(i, unit, value))
    store.record_outcome(outcome("n", "u2", 100.0, metric="other"))
    summary = store.summary("x", "m")
    assert summary.conflicts == 1
    assert summary.variants == {
        "a": VariantStats(n_units=2, n_units_with_outcome=1, sum=4.0, sum_sq=16.0),
        "b": VariantStats(n_units=2, n_units_with_outcome=2, sum=7.0, sum_sq=29.0),
    }
    assert len(store.outcomes("x", "other")) == 1


def test_reads_page_through_long_streams(store: RedisEventStore) -> None:
    for i in range(2500):
        store.record_exposure(exposure(i, f"u{i}", "a"))
    assert [e.event_id for e in store.exposures("x")] == [f"e{i}" for i in range(2500)]


def test_concurrent_writers_lose_nothing(store: RedisEventStore) -> None:
    threads, per_thread = 8, 50
    n = threads * per_thread
    assert write_concurrently(store, threads, per_thread) == 2 * n
    assert len(store.exposures("x")) == len(store.outcomes("x")) == n


def test_unreachable_server_is_a_store_error() -> None:
    with pytest.raises(StoreError, match="cannot connect") as info:
        RedisEventStore(f"redis://127.0.0.1:{free_port()}/0")
    assert info.value.__cause__ is not None


def test_server_without_fsync_per_write_is_refused(tmp_path: Path) -> None:
    with (
        RedisServer(tmp_path / "lax", durable=False) as lax,
        pytest.raises(StoreError, match="appendfsync"),
    ):
        RedisEventStore(lax.url)


def test_writes_after_the_server_died_raise_store_error(
    server: RedisServer, store: RedisEventStore
) -> None:
    server.kill()
    with pytest.raises(StoreError):
        store.record_exposure(exposure(1, "u1", "a"))


def test_writer_sigkilled_mid_stream_keeps_acknowledged_events_and_replay_is_exact(
    server: RedisServer, store: RedisEventStore
) -> None:
    n, kill_after = 1000, 60
    writer = start_writer(REDIS_WRITER, server.url, n)
    try:
        acked = read_acks(writer, kill_after)
    finally:
        writer.send_signal(signal.SIGKILL)
    acked += drain(writer)
    assert kill_after <= len(acked) < n, "the kill must land mid-stream"
    check_acked_present(store, acked)
    run_replay(REDIS_WRITER, server.url, n)
    check_exact(store, n)


def test_server_sigkilled_mid_stream_restarts_from_aof_with_every_acknowledged_event(
    server: RedisServer,
) -> None:
    n, kill_after = 1000, 60
    writer = start_writer(REDIS_WRITER, server.url, n)
    try:
        acked = read_acks(writer, kill_after)
        server.kill()  # the server dies under the writer, which then fails with StoreError
    finally:
        acked += drain(writer)
    assert writer.returncode != 0, "the writer must have seen the server die"
    assert kill_after <= len(acked) < n, "the kill must land mid-stream"

    server.start()  # same dir, same port: Redis replays its AOF
    store = RedisEventStore(server.url)
    try:
        check_acked_present(store, acked)
        run_replay(REDIS_WRITER, server.url, n)
        check_exact(store, n)
    finally:
        store.close()
