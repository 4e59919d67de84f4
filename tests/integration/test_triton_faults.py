"""Triton failing, for real: the old crash trigger (many calls cut short by tight deadlines on
one shared channel), kill -9 under supervision, and the parent dying without a goodbye."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from contract.features import load_features
from contract.repository import RepositoryReader
from inference.errors import InferenceError
from inference.triton.client import TritonClient
from inference.triton.server import TritonServer, reap_leftovers
from inference.triton.supervisor import Backoff, TritonSupervisor
from training.feeds import random_feeds

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def feeds(built_repo: Path) -> dict[str, Any]:
    repo = RepositoryReader(built_repo)
    version = max(repo.versions("user_tower"))
    features = load_features(repo.version_dir("user_tower", version) / "features.npz")
    return random_feeds(features, np.random.default_rng(0))


def wait_for(condition: Any, timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(0.1)
    raise AssertionError(f"not within {timeout_s:g}s: {what}")


def test_tight_deadlines_on_a_shared_channel_do_not_crash_triton(movielens_repo: Path) -> None:
    """What crashed Triton 2.51 (SIGSEGV within seconds) while the client cancelled late
    calls: sixteen threads, one gRPC channel, the graph's four models at their real sizes,
    5-35 ms deadlines. Now late answers are dropped instead and the server stays up."""
    repo = RepositoryReader(movielens_repo)
    version = max(repo.versions("user_tower"))
    features = load_features(repo.version_dir("user_tower", version) / "features.npz")
    feeds = random_feeds(features, np.random.default_rng(0))
    work = [
        ("ranker_dcn", feeds["ranker"](257)),
        ("ranker_mlp", feeds["ranker"](257)),
        ("user_tower", feeds["user_tower"](1)),
        ("combiner", feeds["combiner"](257)),
    ]
    outcomes = {"ok": 0, "late": 0}
    lock = threading.Lock()
    with (
        TritonServer(movielens_repo, models=[model for model, _ in work]) as triton,
        TritonClient(triton.grpc_url, "grpc") as client,
    ):
        for model, feed in work:
            client.infer(model, feed)  # configs cached: the deadline bounds the call itself
        stop = time.monotonic() + 15.0

        def storm(seed: int) -> None:
            rng = random.Random(seed)
            while time.monotonic() < stop and triton.exited() is None:
                model, feed = rng.choice(work)
                try:
                    client.infer(model, feed, timeout_s=rng.uniform(0.005, 0.035))
                    kind = "ok"
                except InferenceError:
                    kind = "late"
                with lock:
                    outcomes[kind] += 1

        threads = [threading.Thread(target=storm, args=(n,)) for n in range(16)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert triton.exited() is None, triton.log_tail()
        assert outcomes["late"] > 0, outcomes  # the deadlines did cut calls short
        assert outcomes["ok"] > 0, outcomes
        wait_for(triton.ready, 10, "Triton answers after the storm")
        assert client.infer("combiner", work[3][1], timeout_s=30)["score"].shape == (257, 1)


@pytest.fixture
def supervised(built_repo: Path) -> Any:
    supervisor = TritonSupervisor(
        TritonServer(built_repo, models=["combiner"]),
        backoff=Backoff(initial_s=0.2, max_s=2.0),
        poll_s=0.05,
    ).start()
    yield supervisor
    supervisor.stop()


def test_a_killed_server_is_restarted_on_the_same_address(
    supervised: TritonSupervisor, feeds: dict[str, Any]
) -> None:
    server = supervised.server
    feed = feeds["combiner"](4)
    run = server.runtime_repository.parent
    prefix = server.shm_prefix
    with TritonClient(server.grpc_url, "grpc") as client:
        assert client.infer("combiner", feed)["score"].shape == (4, 1)
        assert server.process is not None
        first = server.process.pid
        os.killpg(first, signal.SIGKILL)
        wait_for(lambda: supervised.state == "restarting", 5, "the supervisor sees the exit")
        wait_for(lambda: supervised.state == "ready", 60, "Triton restarted")
        assert supervised.restarts == 1
        assert server.process is not None
        assert server.process.pid != first
        # The same address: the client's channel reconnects by itself.
        wait_for(lambda: client.readiness(1.0) is None, 10, "the old channel reaches it")
        assert client.infer("combiner", feed, timeout_s=10)["score"].shape == (4, 1)
    # The dead run's regions were removed; only the new run's (same derived prefix) exist.
    assert server.runtime_repository.parent == run
    assert server.shm_prefix == prefix


def test_stop_ends_supervision(supervised: TritonSupervisor) -> None:
    server = supervised.server
    assert server.process is not None
    pid = server.process.pid
    supervised.stop()
    assert supervised.state == "stopped"
    time.sleep(0.5)
    assert server.process is None  # not restarted after a deliberate stop
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)


def test_a_killed_parent_takes_triton_with_it_and_the_next_start_clears_the_rest(
    built_repo: Path, tmp_path: Path
) -> None:
    """kill -9 of the process that started Triton (``cascade serve`` in real life): the
    kernel kills tritonserver (parent-death signal), and the next run's start removes the
    run directory and shared memory the dead one left."""
    script = textwrap.dedent(
        f"""
        import json, sys, time
        from inference.triton.server import TritonServer
        server = TritonServer({str(built_repo)!r}, models=["combiner"]).start()
        print(json.dumps({{"pid": server.process.pid, "prefix": server.shm_prefix,
                          "run": str(server.runtime_repository.parent)}}), flush=True)
        time.sleep(600)
        """
    )
    parent = subprocess.Popen(
        [sys.executable, "-c", script], stdout=subprocess.PIPE, text=True, cwd=os.getcwd()
    )
    try:
        assert parent.stdout is not None
        started = json.loads(parent.stdout.readline())
    finally:
        parent.kill()
        parent.wait()
        if parent.stdout is not None:
            parent.stdout.close()
    triton_pid, run = started["pid"], Path(started["run"])

    def gone() -> bool:
        try:
            os.kill(triton_pid, 0)
        except ProcessLookupError:
            return True
        return Path(f"/proc/{triton_pid}/stat").read_text().split(")")[1].split()[0] == "Z"

    wait_for(gone, 15, "tritonserver dies with its parent")
    assert run.exists()  # nobody cleaned up: the parent was killed
    assert run in reap_leftovers()
    assert not run.exists()
    assert not list(Path("/dev/shm").glob(f"{started['prefix']}*"))
