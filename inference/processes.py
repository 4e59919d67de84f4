"""What /proc says about a process, for the code that cleans up after dead ones."""

from __future__ import annotations

import os
import signal
from pathlib import Path

PROC = Path("/proc")


def parent_and_start(pid: int, proc: Path = PROC) -> tuple[int, int] | None:
    """(parent pid, start time in clock ticks since boot), or None if there is no such
    process. With the pid, the start time identifies a process even after pids are reused."""
    try:
        stat = (proc / str(pid) / "stat").read_text()
    except OSError:
        return None
    # The command name (field 2) may hold spaces and parentheses; fields after it are plain.
    fields = stat.rsplit(")", 1)[1].split()
    return int(fields[1]), int(fields[19])


def naming(path: Path, proc: Path = PROC) -> list[int]:
    """The processes whose command line names a file under ``path`` (not this one).

    A run's HAProxy names its config in the run's folder; Ray replaces it with a new process
    on every config reload (``-sf <old pid>``), and that one is nobody's child Ray tracks, so
    cleanup finds it by what it reads, which Ray never renames."""
    prefix = str(path).rstrip("/") + "/"
    found = []
    for entry in proc.iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            argv = (entry / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if any(arg.decode(errors="replace").startswith(prefix) for arg in argv):
            found.append(int(entry.name))
    return found


def kill_naming(path: Path, proc: Path = PROC) -> list[int]:
    """SIGKILL every process :func:`naming` ``path``; the pids signalled."""
    killed = []
    for pid in naming(path, proc):
        try:
            os.kill(pid, signal.SIGKILL)
            killed.append(pid)
        except (ProcessLookupError, PermissionError):
            continue
    return killed
