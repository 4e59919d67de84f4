"""What /proc says about a process, for the code that cleans up after dead ones."""

from __future__ import annotations

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
