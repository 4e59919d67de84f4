"""Request deadlines that travel down the graph.

A request gets one end-to-end deadline when it arrives; each stage runs under the smaller of
its own budget and what is left of that deadline, so a slow early stage shrinks the later
ones instead of pushing the response past its budget. The clock is injected for tests.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

Clock = Callable[[], float]


@dataclass(frozen=True)
class Deadline:
    """An absolute point on ``clock`` (seconds) by which the whole request must answer."""

    at: float
    clock: Clock = time.monotonic

    @classmethod
    def after(cls, budget_ms: float, clock: Clock = time.monotonic) -> Deadline:
        return cls(clock() + budget_ms / 1000.0, clock)

    def remaining_s(self) -> float:
        return max(0.0, self.at - self.clock())

    def expired(self) -> bool:
        return self.clock() >= self.at

    def stage_timeout_s(self, budget_ms: float, reserve_ms: float = 0.0) -> float:
        """Seconds a stage may take: its budget, capped by what is left after ``reserve_ms``
        is kept back for the stages that must still run after it."""
        left = self.remaining_s() - reserve_ms / 1000.0
        return max(0.0, min(budget_ms / 1000.0, left))
