"""Keeps a local Triton running: a crashed tritonserver is restarted, the graph never exits.

The graph already degrades while its model server is away (retrieval falls back to popular
items, ranking to the retrieval order); what it needs from the launcher is that the server
comes back. The supervisor watches the process from a thread, and when it exits clears what
it left (stubs, shared memory), waits a backoff and starts it again on the same ports, so
the graph's clients reconnect to the same address and full-quality answers return on their
own. The backoff (:class:`Backoff`) is pure and resets once a run has stayed up a while, so
a server that crashes once a day restarts at once and one that cannot start does not spin.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

from inference.triton.server import TritonServer

log = logging.getLogger("cascade.inference")

State = Literal["ready", "restarting", "stopped"]


@dataclass(frozen=True)
class Backoff:
    """Delay before restart n+1 after ``failures`` consecutive short-lived runs."""

    initial_s: float = 0.5
    multiplier: float = 2.0
    max_s: float = 30.0
    #: A run that stayed up this long was healthy: the next crash restarts at ``initial_s``.
    healthy_after_s: float = 60.0

    def delay(self, failures: int) -> float:
        return float(min(self.max_s, self.initial_s * self.multiplier ** max(failures, 0)))

    def failures_after(self, failures: int, uptime_s: float) -> int:
        """The count of consecutive failures once a run that lasted ``uptime_s`` ended."""
        return 0 if uptime_s >= self.healthy_after_s else failures + 1


class TritonSupervisor:
    """Starts ``server`` and restarts it whenever it exits, until :meth:`stop`.

    ``state`` is ``ready`` while the server runs, ``restarting`` while it is down and
    ``stopped`` after :meth:`stop`; ``on_change`` is told each change (for a log line).
    """

    def __init__(
        self,
        server: TritonServer,
        *,
        backoff: Backoff | None = None,
        poll_s: float = 0.2,
        on_change: Callable[[State, str], None] | None = None,
    ) -> None:
        self.server = server
        self.backoff = backoff or Backoff()
        self.poll_s = poll_s
        self.on_change = on_change
        self.state: State = "stopped"
        self.restarts = 0
        self.last_exit = ""
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()

    def start(self) -> TritonSupervisor:
        self.server.start()
        self._set("ready", "started")
        self._thread = threading.Thread(target=self._watch, name="triton-supervisor", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stopping.set()
        with self._lock:  # a restart in progress finishes first, then is stopped
            self.server.stop()
            self.state = "stopped"
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(timeout=10)

    def _set(self, state: State, why: str) -> None:
        self.state = state
        if self.on_change is not None:
            self.on_change(state, why)

    def _watch(self) -> None:
        failures = 0
        started = time.monotonic()
        while not self._stopping.is_set():
            status = self.server.exited()
            if status is None:
                self._stopping.wait(self.poll_s)
                continue
            if self._stopping.is_set():
                return
            failures = self.backoff.failures_after(failures, time.monotonic() - started)
            delay = self.backoff.delay(failures - 1)
            self.last_exit = f"tritonserver exited with status {status}"
            log.warning("%s; restarting it in %.1fs", self.last_exit, delay)
            self._set("restarting", self.last_exit)
            while not self._stopping.wait(delay):
                with self._lock:
                    if self._stopping.is_set():
                        return
                    try:
                        self.server.restart()
                    except Exception as exc:  # any failure to start is retried
                        failures += 1
                        delay = self.backoff.delay(failures - 1)
                        log.warning("tritonserver did not restart (%s); again in %.1fs", exc, delay)
                        continue
                self.restarts += 1
                started = time.monotonic()
                self._set("ready", f"restarted (restart {self.restarts})")
                break
