"""A throwaway ``redis-server`` for tests: free port, temp dir, AOF fsync on every write.

Why a real server and not a fake: what the event-store tests check is durability (the AOF
survives SIGKILL) and atomicity (Lua scripts), which only the real server has. Why fail rather
than skip when the binary is missing: a skipped durability test reads as a pass in CI.
"""

from __future__ import annotations

import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path
from types import TracebackType

import pytest
import redis

INSTALL_HINT = (
    "redis-server not found on PATH: the event-store tests need a real Redis. "
    "Install Debian's package: apt-get update && apt-get install -y redis-server"
)


def redis_server_binary() -> str:
    """The ``redis-server`` executable, or a test failure saying how to install it."""
    path = shutil.which("redis-server") or (
        "/usr/bin/redis-server" if Path("/usr/bin/redis-server").exists() else None
    )
    if path is None:
        pytest.fail(INSTALL_HINT, pytrace=False)
    return path


def free_port() -> int:
    """A port nothing listens on right now (the OS picks it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class RedisServer:
    """One ``redis-server`` process on ``127.0.0.1:port`` keeping its AOF in ``directory``.

    ``kill`` (SIGKILL, no shutdown save) then ``start`` again on the same directory and port is
    the crash test: whatever the server acknowledged must come back from the AOF.
    """

    def __init__(self, directory: Path, *, durable: bool = True) -> None:
        self.directory = directory
        self.port = free_port()
        self.durable = durable
        self._proc: subprocess.Popen[bytes] | None = None
        self._starts = 0

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self, timeout: float = 15.0) -> None:
        """Start the server and wait until it answers PING (after loading its AOF)."""
        self.directory.mkdir(parents=True, exist_ok=True)
        fsync = ["--appendonly", "yes", "--appendfsync", "always"] if self.durable else []
        args = [
            redis_server_binary(),
            "--port", str(self.port),
            "--bind", "127.0.0.1",
            "--dir", str(self.directory),
            "--save", "",
            "--daemonize", "no",
            *fsync,
        ]  # fmt: skip
        self._starts += 1
        log = (self.directory / f"redis-{self._starts}.log").open("wb")
        self._proc = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT)
        log.close()
        client = redis.Redis(port=self.port, socket_timeout=1.0)
        deadline = time.monotonic() + timeout
        try:
            while True:
                if self._proc.poll() is not None:
                    raise RuntimeError(f"redis-server exited at start: {self._log_tail()}")
                try:
                    if client.ping():
                        return
                except redis.RedisError:
                    pass
                if time.monotonic() > deadline:
                    self.kill()
                    raise RuntimeError(f"redis-server did not answer PING: {self._log_tail()}")
                time.sleep(0.02)
        finally:
            client.close()

    def kill(self) -> None:
        """SIGKILL the server: no shutdown hook, no final save, like a crash."""
        if self._proc is not None and self._proc.poll() is None:
            self._proc.send_signal(signal.SIGKILL)
            self._proc.wait(timeout=10)
        self._proc = None

    def stop(self) -> None:
        """Terminate the server (SIGTERM, then SIGKILL if it lingers)."""
        if self._proc is not None and self._proc.poll() is None:
            self._proc.terminate()
            try:
                self._proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait(timeout=10)
        self._proc = None

    def _log_tail(self) -> str:
        path = self.directory / f"redis-{self._starts}.log"
        return path.read_text(errors="replace")[-2000:] if path.exists() else "(no log)"

    def __enter__(self) -> RedisServer:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
