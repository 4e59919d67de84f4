"""Admission control: a bound on requests in flight, refusals counted, never below zero."""

from __future__ import annotations

import threading

import pytest
from prometheus_client import REGISTRY

from inference.graph.admission import Admission


def rejected() -> float:
    value = REGISTRY.get_sample_value("cascade_rejected_requests_total", {"reason": "overload"})
    return value or 0.0


def in_flight_gauge() -> float | None:
    return REGISTRY.get_sample_value("cascade_in_flight_requests")


def test_admits_up_to_the_maximum_then_refuses() -> None:
    admission = Admission(3)
    before = rejected()
    assert [admission.try_enter() for _ in range(3)] == [True, True, True]
    assert admission.in_flight == 3
    assert in_flight_gauge() == 3.0
    assert not admission.try_enter()
    assert not admission.try_enter()
    assert admission.in_flight == 3  # a refusal takes no slot
    assert rejected() == before + 2


def test_leaving_frees_a_slot() -> None:
    admission = Admission(1)
    assert admission.try_enter()
    assert not admission.try_enter()
    admission.leave()
    assert admission.in_flight == 0
    assert in_flight_gauge() == 0.0
    assert admission.try_enter()
    assert admission.in_flight == 1


def test_in_flight_never_goes_negative() -> None:
    admission = Admission(2)
    admission.leave()
    admission.leave()
    assert admission.in_flight == 0
    # An unmatched leave must not create extra capacity.
    assert admission.try_enter()
    assert admission.try_enter()
    assert not admission.try_enter()


@pytest.mark.parametrize("bad", [0, -1])
def test_a_maximum_below_one_is_rejected(bad: int) -> None:
    with pytest.raises(ValueError, match="max_in_flight"):
        Admission(bad)


def test_concurrent_entries_never_exceed_the_maximum() -> None:
    admission = Admission(5)
    admitted: list[bool] = []
    lock = threading.Lock()
    start = threading.Barrier(20)

    def enter() -> None:
        start.wait()
        ok = admission.try_enter()
        with lock:
            admitted.append(ok)

    threads = [threading.Thread(target=enter) for _ in range(20)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert admitted.count(True) == 5
    assert admission.in_flight == 5
