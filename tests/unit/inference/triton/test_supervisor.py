"""The pieces of Triton supervision that need no server: the restart backoff, the names a
run's leftovers carry, and the reaper that removes a dead run's leftovers and nothing else."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

import inference.triton.server as server_module
from inference.triton.server import (
    OWNER_FILE,
    RUN_PREFIX,
    process_start_time,
    reap_leftovers,
    shm_prefix_for,
    write_owner,
)
from inference.triton.supervisor import Backoff


def test_backoff_doubles_up_to_its_ceiling() -> None:
    backoff = Backoff(initial_s=0.5, multiplier=2.0, max_s=4.0)
    assert [backoff.delay(n) for n in range(6)] == [0.5, 1.0, 2.0, 4.0, 4.0, 4.0]


def test_a_run_that_stayed_up_resets_the_backoff() -> None:
    backoff = Backoff(healthy_after_s=60.0)
    assert backoff.failures_after(5, uptime_s=61.0) == 0
    assert backoff.failures_after(5, uptime_s=3.0) == 6
    assert backoff.failures_after(0, uptime_s=0.1) == 1


def test_shm_prefix_is_derived_from_the_run_directory() -> None:
    run = Path(f"/tmp/{RUN_PREFIX}k3_x9z")
    assert shm_prefix_for(run) == "cascade_k3x9z_"
    assert shm_prefix_for(run) == shm_prefix_for(Path(str(run)))  # pure: the next start agrees
    assert shm_prefix_for(Path("/tmp/other")) != shm_prefix_for(run)


def test_start_time_tells_a_reused_pid_apart() -> None:
    mine = process_start_time(os.getpid())
    assert isinstance(mine, int)
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    assert process_start_time(child.pid) is None  # gone (and reaped)


def dead_pid() -> int:
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


def fake_run(tmp: Path, name: str, owner: dict[str, object]) -> Path:
    run = tmp / f"{RUN_PREFIX}{name}"
    (run / "repository").mkdir(parents=True)
    (run / OWNER_FILE).write_text(json.dumps(owner))
    return run


def test_reaper_removes_a_dead_owners_run_and_its_shared_memory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    shm = tmp_path / "shm"
    shm.mkdir()
    monkeypatch.setattr(server_module, "SHM_DIR", shm)
    dead = fake_run(
        tmp_path,
        "dead1",
        {"pid": dead_pid(), "start": 1, "server_pid": dead_pid(), "shm_prefix": "cascade_dead1_"},
    )
    (shm / "cascade_dead1_region_a").write_bytes(b"x")
    (shm / "cascade_live1_region_a").write_bytes(b"x")
    live = tmp_path / f"{RUN_PREFIX}live1"
    live.mkdir()
    write_owner(live, server_pid=dead_pid(), shm_prefix="cascade_live1_")  # this process owns it
    unstarted = tmp_path / f"{RUN_PREFIX}new1"  # no owner file yet: being set up right now
    unstarted.mkdir()

    assert reap_leftovers(tmp_path) == [dead]
    assert not dead.exists()
    assert live.exists()
    assert unstarted.exists()
    assert sorted(p.name for p in shm.iterdir()) == ["cascade_live1_region_a"]


def test_reaper_takes_a_reused_pid_for_dead(tmp_path: Path) -> None:
    """Same pid as a running process but another start time: the owner is gone."""
    mine = process_start_time(os.getpid())
    assert mine is not None
    run = fake_run(
        tmp_path, "reused", {"pid": os.getpid(), "start": mine - 1, "shm_prefix": "cascade_r_"}
    )
    assert reap_leftovers(tmp_path) == [run]


def test_reaper_never_kills_a_process_that_is_not_tritonserver(tmp_path: Path) -> None:
    bystander = subprocess.Popen(
        [sys.executable, "-c", "import time; time.sleep(30)"], start_new_session=True
    )
    try:
        fake_run(
            tmp_path,
            "b",
            {"pid": dead_pid(), "start": 1, "server_pid": bystander.pid, "shm_prefix": "c_b_"},
        )
        reap_leftovers(tmp_path)
        assert bystander.poll() is None
    finally:
        bystander.kill()
        bystander.wait()
