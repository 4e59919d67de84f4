"""A read-only view of a directory, as a pod sees its model volume.

The tests run as root, and root ignores file modes, so ``chmod`` proves nothing. A read-only
bind mount makes every write below it fail with EROFS, whoever asks, as a ``readOnly``
volume does. Where mounting is not allowed (no CAP_SYS_ADMIN) the test is skipped, not
passed: the snapshot tests that need no mount still run there.
"""

from __future__ import annotations

import contextlib
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest


def _mount(*args: str) -> str | None:
    """Run ``mount`` with ``args``; why it failed, or None."""
    try:
        done = subprocess.run(["mount", *args], capture_output=True, text=True, check=False)
    except OSError as exc:
        return str(exc)
    return None if done.returncode == 0 else done.stderr.strip() or f"exit {done.returncode}"


@contextlib.contextmanager
def read_only_view(source: Path, view: Path) -> Iterator[Path]:
    """``source`` bind-mounted read-only at ``view`` (created) for the ``with`` block."""
    view.mkdir(parents=True, exist_ok=True)
    why = _mount("--bind", str(source), str(view))
    if why is not None:
        pytest.skip(f"cannot bind-mount {source} here: {why}")
    try:
        why = _mount("-o", "remount,bind,ro", str(view))
        if why is not None:
            pytest.skip(f"cannot make the bind mount {view} read-only: {why}")
        yield view
    finally:
        done = subprocess.run(["umount", str(view)], capture_output=True, check=False)
        if done.returncode != 0:  # something still holds it open: detach it anyway
            subprocess.run(["umount", "-l", str(view)], check=True)
