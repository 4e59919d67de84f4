"""``cascade serve`` as users run it, in its own process: a busy port, SIGTERM, kill -9."""

from __future__ import annotations

import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from benchmarks.reliability import Serve, alive, health, shell_environment

pytestmark = pytest.mark.integration

CASCADE = str(Path(sys.executable).parent / "cascade")


def run_folders() -> set[Path]:
    return set(Path(tempfile.gettempdir()).glob("cserve-*"))


def test_a_busy_port_is_one_line_and_status_2(movielens_repo: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        started = time.monotonic()
        done = subprocess.run(
            [CASCADE, "serve", "--repo", str(movielens_repo), "--http-port", str(port)],
            capture_output=True,
            text=True,
            timeout=120,
            env=shell_environment(),
        )
    assert done.returncode == 2
    assert done.stderr.strip().splitlines() == [
        f"cascade serve: error: cannot serve: 127.0.0.1:{port} already in use "
        "(--http-port/--grpc-port choose others)"
    ]
    assert time.monotonic() - started < 30  # refused before Ray or Triton started


def test_sigterm_stops_everything_cleanly(movielens_repo: Path) -> None:
    before = run_folders()
    serve = Serve(movielens_repo).start()
    tree = serve.tree()
    assert any(p.name() == "tritonserver" for p in tree)
    code, output = serve.stop()
    assert code == 0, output[-2000:]
    assert "Traceback" not in output, output[-2000:]
    time.sleep(2.0)
    assert [p.name() for p in tree if alive(p)] == []
    assert run_folders() <= before


def test_kill_9_of_serve_leaves_no_process_and_no_folder(movielens_repo: Path) -> None:
    before = run_folders()
    serve = Serve(movielens_repo).start()
    assert health(serve.url) == {"ready": True}
    tree = serve.tree()
    assert serve.process is not None
    serve.process.kill()
    serve.process.wait()
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and any(alive(p) for p in tree[1:]):
        time.sleep(0.5)
    assert [p.name() for p in tree[1:] if alive(p)] == []
    while time.monotonic() < deadline and not run_folders() <= before:
        time.sleep(0.5)
    assert run_folders() <= before
