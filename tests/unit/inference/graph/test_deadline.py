"""Request deadlines on an injected clock: what is left, when it has run out, and how much of
it one stage may take."""

from __future__ import annotations

import pytest

from inference.graph.deadline import Deadline


class Clock:
    def __init__(self, now: float = 1000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def test_after_starts_the_budget_at_the_clocks_now() -> None:
    clock = Clock(1000.0)
    deadline = Deadline.after(50.0, clock)
    assert deadline.at == pytest.approx(1000.05)
    assert deadline.remaining_s() == pytest.approx(0.05)
    assert not deadline.expired()


def test_remaining_shrinks_with_the_clock_and_never_goes_negative() -> None:
    clock = Clock(10.0)
    deadline = Deadline.after(100.0, clock)
    clock.now = 10.03
    assert deadline.remaining_s() == pytest.approx(0.07)
    assert not deadline.expired()
    clock.now = 10.1
    assert deadline.remaining_s() == 0.0
    assert deadline.expired()  # exactly at the deadline counts as expired
    clock.now = 11.0
    assert deadline.remaining_s() == 0.0
    assert deadline.expired()


def test_stage_timeout_is_the_stage_budget_while_plenty_is_left() -> None:
    clock = Clock()
    deadline = Deadline.after(50.0, clock)
    assert deadline.stage_timeout_s(15.0) == pytest.approx(0.015)
    assert deadline.stage_timeout_s(15.0, reserve_ms=10.0) == pytest.approx(0.015)


def test_stage_timeout_is_capped_by_what_is_left() -> None:
    clock = Clock(0.0)
    deadline = Deadline.after(50.0, clock)
    clock.now = 0.04  # 10 ms left
    assert deadline.stage_timeout_s(25.0) == pytest.approx(0.010)


def test_stage_timeout_keeps_the_reserve_for_later_stages() -> None:
    clock = Clock(0.0)
    deadline = Deadline.after(50.0, clock)
    clock.now = 0.02  # 30 ms left, 10 ms of it reserved: 20 ms for this stage
    assert deadline.stage_timeout_s(25.0, reserve_ms=10.0) == pytest.approx(0.020)
    # The budget still wins when it is the smaller of the two.
    assert deadline.stage_timeout_s(5.0, reserve_ms=10.0) == pytest.approx(0.005)


@pytest.mark.parametrize(
    ("now", "reserve_ms"),
    [(0.045, 10.0), (0.05, 0.0), (0.2, 0.0), (0.0, 80.0)],
)
def test_stage_timeout_is_never_negative(now: float, reserve_ms: float) -> None:
    clock = Clock(0.0)
    deadline = Deadline.after(50.0, clock)
    clock.now = now
    assert deadline.stage_timeout_s(15.0, reserve_ms=reserve_ms) == 0.0


def test_the_default_clock_is_monotonic_time() -> None:
    deadline = Deadline.after(60_000.0)
    assert 59.0 < deadline.remaining_s() <= 60.0
    assert not deadline.expired()
