"""Cleans up after a ``cascade serve`` that died without stopping (kill -9, OOM killer).

Ray's processes outlive their driver: raylet and GCS notice and exit, but its agents
(``ray::DashboardAgent``, ``ray::RuntimeEnvAgent``) stayed for minutes, and the run's
private folder (Ray's session, HAProxy's sockets) with them. The launcher starts this small
process beside each run. It keeps a list of its parent's descendants (pid and start time,
so a reused pid is never mistaken for one; Ray renames its processes, so their command
lines cannot be trusted), and when the parent goes away without stopping it first (a clean
stop does), it kills those still running and removes the run's folder.

    python -m inference.graph.guardian <parent pid> <run folder>
"""

from __future__ import annotations

import os
import shutil
import signal
import sys
import time
from pathlib import Path

from inference.processes import kill_naming, parent_and_start

Process = tuple[int, int]  # (pid, start time in clock ticks since boot)


def descendants(root: int, proc: Path = Path("/proc")) -> set[Process]:
    """Every process below ``root`` now, as (pid, start time)."""
    children: dict[int, list[Process]] = {}
    for entry in proc.iterdir():
        if entry.name.isdigit():
            stat = parent_and_start(int(entry.name), proc)
            if stat is not None:
                children.setdefault(stat[0], []).append((int(entry.name), stat[1]))
    found: set[Process] = set()
    todo = [root]
    while todo:
        for child in children.get(todo.pop(), []):
            if child not in found:
                found.add(child)
                todo.append(child[0])
    return found


def clean_up(known: set[Process], run: Path, proc: Path = Path("/proc")) -> list[int]:
    """Kill the ``known`` processes still running (same pid and start time), then remove the
    run's folder; the pids it killed."""
    killed = []
    for pid, start in sorted(known):
        if pid == os.getpid():
            continue
        stat = parent_and_start(pid, proc)
        if stat is None or stat[1] != start:
            continue  # gone, or the pid now belongs to someone else
        try:
            os.kill(pid, signal.SIGKILL)
            killed.append(pid)
        except (ProcessLookupError, PermissionError):
            continue
    # Also what reads the run's files but was never seen as a descendant: an HAProxy Ray
    # started on a config reload between two polls.
    killed += kill_naming(run, proc)
    shutil.rmtree(run, ignore_errors=True)
    return killed


def watch(parent: int, run: Path, poll_s: float = 0.5) -> None:
    """Return once ``parent`` is gone, after cleaning up; SIGTERM (a clean stop) ends it
    without touching anything."""
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C goes to the server, which stops us
    known: set[Process] = set()
    while os.getppid() == parent:
        known |= descendants(parent)
        time.sleep(poll_s)
    # Orphans were re-parented: whatever is left of the tree is still on the list.
    clean_up(known, run)
    # The run's tritonserver died with its parent (parent-death signal); its folder and
    # shared memory go now rather than at the next start.
    from inference.triton.server import reap_leftovers

    reap_leftovers()


if __name__ == "__main__":
    watch(int(sys.argv[1]), Path(sys.argv[2]))
