"""Admission control: a bound on requests in flight per ingress replica.

Past capacity, queueing only adds latency every caller pays; answering 503 with
``Retry-After`` at once lets clients and load balancers back off or go elsewhere, and keeps
the latency of admitted requests inside their budget.
"""

from __future__ import annotations

import threading

from inference import metrics


class Admission:
    def __init__(self, max_in_flight: int) -> None:
        if max_in_flight < 1:
            raise ValueError("max_in_flight must be >= 1")
        self.max_in_flight = max_in_flight
        self._in_flight = 0
        self._lock = threading.Lock()

    @property
    def in_flight(self) -> int:
        return self._in_flight

    def try_enter(self) -> bool:
        """Admit one request (True) or refuse it (False, counted as rejected)."""
        with self._lock:
            if self._in_flight >= self.max_in_flight:
                metrics.REJECTED.labels(reason="overload").inc()
                return False
            self._in_flight += 1
            metrics.IN_FLIGHT.set(self._in_flight)
            return True

    def leave(self) -> None:
        with self._lock:
            self._in_flight = max(0, self._in_flight - 1)
            metrics.IN_FLIGHT.set(self._in_flight)
