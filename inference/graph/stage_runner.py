"""How a request's stages run, whichever surface serves it (recommendations, similar items):
blocking work in the executor under a timeout, each stage timed and traced, each fallback
named and counted, and the injected delays of drills and tests.

One place for this plumbing, so both surfaces time out, report and degrade alike.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from typing import TypeVar

from contract.graph_config import FaultConfig
from inference import metrics
from inference.errors import DeadlineExceeded
from inference.graph.telemetry import tracer

log = logging.getLogger("cascade.inference")

T = TypeVar("T")


class StageRunner:
    """Runs stages for one service; ``clock`` is injectable for tests."""

    def __init__(
        self,
        executor: ThreadPoolExecutor,
        *,
        faults: FaultConfig,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.executor = executor
        self.clock = clock
        self._faults = faults
        self._tracer = tracer()

    async def run(self, work: Callable[[], T], timeout_s: float, stage: str) -> T:
        """``work`` in the executor; ``DeadlineExceeded`` once ``timeout_s`` has passed."""
        if timeout_s <= 0:
            raise DeadlineExceeded(f"no time left for {stage}")
        loop = asyncio.get_running_loop()
        expires = self.clock() + timeout_s

        def unless_expired() -> T:
            # Work abandoned by a timed-out request must not run late: under overload it
            # would queue ahead of live requests and time them out too.
            if self.clock() >= expires:
                raise DeadlineExceeded(f"{stage} expired before it started")
            return work()

        future = loop.run_in_executor(self.executor, unless_expired)
        try:
            return await asyncio.wait_for(future, timeout_s)
        except TimeoutError as exc:
            raise DeadlineExceeded(f"{stage} exceeded {timeout_s * 1000:.1f} ms") from exc

    @contextmanager
    def stage(self, name: str, stage_ms: dict[str, float], stages: list[str]) -> Iterator[object]:
        """Time and trace stage ``name``; it joins ``stages`` only when it completes."""
        start = self.clock()
        # No exception recording: a stage that falls back raises by design, and formatting
        # its traceback (Python 3.11 parses source for caret positions) costs more than the
        # stage; the fallback is on the request's span and in the response instead.
        with self._tracer.start_as_current_span(
            f"stage.{name}", record_exception=False, set_status_on_exception=False
        ) as span:
            try:
                yield span
                stages.append(name)
            finally:
                seconds = self.clock() - start
                stage_ms[name] = round(seconds * 1000.0, 3)
                metrics.STAGE_SECONDS.labels(stage=name).observe(seconds)

    def fallback(
        self, stage: str, used: str, fallbacks: list[str], cause: BaseException | None
    ) -> None:
        """Record that ``stage`` answered with ``used`` (``stage:used`` in the response)."""
        fallbacks.append(f"{stage}:{used}")
        metrics.FALLBACKS.labels(stage=stage, fallback=used).inc()
        if cause is not None:
            log.debug("%s fell back to %s: %s", stage, used, cause)

    def inject(self, stage: str) -> None:
        """Sleep as long as the config's faults slow ``stage`` (blocking: call it in the
        executor, as a slow dependency would block there)."""
        delay = self._faults.delay_ms.get(stage, 0.0)
        if delay > 0:
            time.sleep(delay / 1000.0)
