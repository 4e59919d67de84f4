"""The guardian a local run leaves beside itself: when its parent dies without stopping, it
kills what is left of the parent's process tree and removes the run's folder; a clean stop
(SIGTERM to the guardian) leaves both alone."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable
from pathlib import Path

from inference.graph.guardian import clean_up, descendants
from inference.processes import naming

#: Starts the guardian, then a grandchild renamed as Ray renames its agents, then waits.
PARENT = textwrap.dedent(
    """
    import os, subprocess, sys, time
    module = "inference.graph.guardian"
    subprocess.Popen([sys.executable, "-m", module, str(os.getpid()), sys.argv[1]])
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"])
    print(child.pid, flush=True)
    time.sleep(120)
    """
)


def wait_for(condition: Callable[[], bool], timeout_s: float = 15.0) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.1)
    return False


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def test_descendants_are_the_whole_tree() -> None:
    child = subprocess.Popen(
        [sys.executable, "-c", "import subprocess, sys; subprocess.run(['sleep', '30'])"]
    )
    try:
        assert wait_for(lambda: len(descendants(child.pid)) == 1)
        pids = {pid for pid, _ in descendants(os.getpid())}
        assert child.pid in pids
        assert pids >= {pid for pid, _ in descendants(child.pid)}
    finally:
        child.kill()
        child.wait()


def test_a_killed_parent_leaves_nothing_behind(tmp_path: Path) -> None:
    run = tmp_path / "cserve-killed01"
    (run / "ray").mkdir(parents=True)
    parent = subprocess.Popen(
        [sys.executable, "-c", PARENT, str(run)], stdout=subprocess.PIPE, text=True
    )
    assert parent.stdout is not None
    grandchild = int(parent.stdout.readline())
    parent.stdout.close()
    try:
        time.sleep(1.5)  # the guardian has listed the tree
        os.kill(parent.pid, signal.SIGKILL)
        parent.wait()
        assert wait_for(lambda: not alive(grandchild)), "the orphan was not killed"
        assert wait_for(lambda: not run.exists()), "the run folder was not removed"
    finally:
        if alive(grandchild):
            os.kill(grandchild, signal.SIGKILL)


def test_a_clean_stop_leaves_the_run_alone(tmp_path: Path) -> None:
    run = tmp_path / "cserve-cleanst1"
    run.mkdir()
    sibling = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"])
    guardian = subprocess.Popen(
        [sys.executable, "-m", "inference.graph.guardian", str(os.getpid()), str(run)]
    )
    try:
        time.sleep(1.0)
        guardian.terminate()
        assert guardian.wait(timeout=10) == 0
        assert sibling.poll() is None
        assert run.exists()
    finally:
        sibling.kill()
        sibling.wait()


#: Like a reloaded HAProxy: started by nobody the guardian watches (a new session, its own
#: parent gone), reading a file in the run folder.
STRAY = textwrap.dedent(
    """
    import subprocess, sys
    stray = subprocess.Popen(
        [sys.executable, "-c", "import time; time.sleep(120)", sys.argv[1]],
        start_new_session=True,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    print(stray.pid, flush=True)
    """
)


def test_a_process_reading_the_run_folder_is_killed_on_clean_up(tmp_path: Path) -> None:
    """Ray replaces the run's HAProxy on each config reload with a process outside the tree
    the guardian lists; cleanup finds it by the run's files it names."""
    run = tmp_path / "cserve-reload01"
    (run / "h").mkdir(parents=True)
    done = subprocess.run(
        [sys.executable, "-c", STRAY, str(run / "h" / "haproxy.cfg")],
        capture_output=True,
        text=True,
        check=True,
    )
    stray = int(done.stdout)
    bystander = subprocess.Popen(
        [sys.executable, "-c", "import time; time.sleep(120)", str(tmp_path / "elsewhere")]
    )
    try:
        assert wait_for(lambda: naming(run) == [stray])
        assert clean_up(set(), run) == [stray]
        assert wait_for(lambda: not alive(stray)), "the stray reader was not killed"
        assert not run.exists()
        assert bystander.poll() is None  # it names another folder
    finally:
        bystander.kill()
        bystander.wait()
        if alive(stray):
            os.kill(stray, signal.SIGKILL)
