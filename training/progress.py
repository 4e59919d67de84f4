"""Progress of long steps: a bar on a terminal, a plain line every few seconds otherwise.

A build's output often goes to a file or a pipe (the demo, CI, a Kubernetes init container's
log), where a bar's carriage returns are either lost or pile up into one unreadable line; a
periodic line saying how far, how fast and how long is left reads well in both.
"""

from __future__ import annotations

import logging
import sys
import time
from collections.abc import Callable
from types import TracebackType
from typing import Any

from tqdm import tqdm  # type: ignore[import-untyped,unused-ignore]

log = logging.getLogger("cascade.training")

#: Seconds between two plain progress lines.
LINE_INTERVAL_S = 10.0


class Progress:
    """``update``/``set_postfix``/``close`` of a tqdm bar, or the same as periodic lines."""

    def __init__(
        self,
        total: int,
        desc: str,
        unit: str,
        *,
        enabled: bool = True,
        terminal: bool | None = None,
        clock: Callable[[], float] = time.monotonic,
        emit: Callable[[str], None] | None = None,
        interval_s: float = LINE_INTERVAL_S,
    ) -> None:
        self.total, self.desc, self.unit = total, desc, unit
        terminal = sys.stderr.isatty() if terminal is None else terminal
        self._bar: Any = tqdm(total=total, desc=desc, unit=unit) if enabled and terminal else None
        self._lines = enabled and not terminal
        self._clock = clock
        self._emit = emit or log.info
        self._interval_s = interval_s
        self._started = self._last = clock()
        self._done = 0
        self._postfix = ""

    def update(self, n: int = 1) -> None:
        self._done += n
        if self._bar is not None:
            self._bar.update(n)
        elif self._lines and self._clock() - self._last >= self._interval_s:
            self._line()

    def set_postfix(self, **values: str) -> None:
        self._postfix = ", ".join(f"{k} {v}" for k, v in values.items())
        if self._bar is not None:
            self._bar.set_postfix(**values)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
        elif self._lines and self._done:
            self._line()

    def _line(self) -> None:
        now = self._clock()
        self._last = now
        elapsed = now - self._started
        share = self._done / self.total if self.total else 1.0
        left = elapsed * (1 - share) / share if share > 0 else float("nan")
        text = (
            f"   {self.desc}: {self._done}/{self.total} {self.unit}s ({share:.0%}), "
            f"{elapsed:.0f}s elapsed, ~{left:.0f}s left"
        )
        self._emit(f"{text}; {self._postfix}" if self._postfix else text)

    def __enter__(self) -> Progress:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()
