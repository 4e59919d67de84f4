"""Third-party chatter kept out of the build log, but not out of reach.

torch's ONNX exporters and onnxruntime's quantizer print progress, warn through ``warnings``
and log through their own (or the root) loggers. None of it is actionable in a build: failures
reach the caller as exceptions. :func:`captured` silences it for the duration of a call and
re-logs everything at DEBUG, so ``cascade -v`` still shows it. Stream redirects and logger
levels are process-wide, so concurrent calls in threads share the quiet period.
"""

from __future__ import annotations

import contextlib
import io
import logging
import os
import warnings
from collections.abc import Iterator, Sequence

logger = logging.getLogger("cascade.training")


class _RootFilter(logging.Filter):
    """Diverts records that a package logs through the root logger (``logging.warning``)."""

    def __init__(self, package_path: str) -> None:
        super().__init__()
        self.package_path = package_path
        self.records: list[logging.LogRecord] = []

    def filter(self, record: logging.LogRecord) -> bool:
        if self.package_path in record.pathname:
            self.records.append(record)
            return False
        return True


@contextlib.contextmanager
def captured(label: str, loggers: Sequence[str], root_package: str | None = None) -> Iterator[None]:
    """Silence ``loggers`` (to ERROR), warnings and stdout/stderr; re-log them at DEBUG.

    ``root_package`` (e.g. ``onnxruntime/quantization``) also diverts what code under that
    path logs through the root logger; a temporary NullHandler on an unconfigured root stops
    such calls from running ``logging.basicConfig()`` behind the application's back.
    """
    noisy = [logging.getLogger(name) for name in loggers]
    levels = [lg.level for lg in noisy]
    root = logging.getLogger()
    guard = logging.NullHandler() if root_package and not root.handlers else None
    diverted = _RootFilter(root_package.replace("/", os.sep)) if root_package else None
    out = io.StringIO()
    caught: list[warnings.WarningMessage] = []
    for lg in noisy:
        lg.setLevel(logging.ERROR)
    if guard is not None:
        root.addHandler(guard)
    if diverted is not None:
        root.addFilter(diverted)
    try:
        with (
            warnings.catch_warnings(record=True) as recorded,
            contextlib.redirect_stdout(out),
            contextlib.redirect_stderr(out),
        ):
            warnings.simplefilter("always")
            try:
                yield
            finally:
                caught.extend(recorded)
    finally:
        for lg, level in zip(noisy, levels, strict=True):
            lg.setLevel(level)
        if diverted is not None:
            root.removeFilter(diverted)
            for record in diverted.records:
                logger.debug("%s %s: %s", label, record.levelname.lower(), record.getMessage())
        if guard is not None:
            root.removeHandler(guard)
        for w in caught:
            logger.debug("%s warning: %s: %s", label, w.category.__name__, w.message)
        for line in out.getvalue().splitlines():
            if line.strip():
                logger.debug("%s: %s", label, line)
