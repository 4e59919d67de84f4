"""The local launcher: a real tritonserver serves the canonical repository through the shim."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import urllib.request
from pathlib import Path

import numpy as np
import pytest

from contract.model_config import parse_config
from inference.errors import Unavailable
from inference.triton.server import TritonServer, free_port, remove_shared_memory
from tests.readonly import read_only_view
from training.repository import ModelRepository


def get(url: str) -> dict[str, object] | list[object]:
    with urllib.request.urlopen(url, timeout=5) as response:
        return json.loads(response.read())  # type: ignore[no-any-return]


def index(server: TritonServer) -> dict[str, str]:
    request = urllib.request.Request(
        f"http://{server.http_url}/v2/repository/index", data=b"{}", method="POST"
    )
    with urllib.request.urlopen(request, timeout=5) as response:
        rows = json.loads(response.read())
    return {f"{r['name']}/{r.get('version', '')}": r.get("state", "") for r in rows}


def test_serves_every_model_with_the_canonical_signature(
    triton: TritonServer, built_repo: Path
) -> None:
    repo = ModelRepository(built_repo)
    for name in repo.models():
        meta = get(f"http://{triton.http_url}/v2/models/{name}")
        assert isinstance(meta, dict)
        config = parse_config(built_repo / name / "config.pbtxt")
        assert [i["name"] for i in meta["inputs"]] == [i.name for i in config.input]  # type: ignore[index,union-attr]
        assert meta["platform"] == "python"  # the shim; the canonical config stays onnxruntime
        assert config.platform == "onnxruntime_onnx"
    states = index(triton)
    assert all(state == "READY" for state in states.values()), states


def test_runtime_repository_links_the_canonical_files(
    triton: TritonServer, built_repo: Path
) -> None:
    repo = ModelRepository(built_repo)
    for name in repo.models():
        version = max(repo.versions(name))
        linked = triton.runtime_repository / name / str(version) / "model.onnx"
        assert linked.resolve() == (repo.version_dir(name, version) / "model.onnx").resolve()
        assert (triton.runtime_repository / name / str(version) / "model.py").is_file()


def test_corrupt_model_fails_alone_while_the_others_serve(built_repo: Path, tmp_path: Path) -> None:
    repo_copy = tmp_path / "model_repo"
    shutil.copytree(built_repo, repo_copy)
    repo = ModelRepository(repo_copy)
    version = max(repo.versions("ranker_mlp"))
    target = repo.version_dir("ranker_mlp", version) / "model.onnx"
    target.write_bytes(b"this is not an onnx file")
    with TritonServer(repo_copy, workdir=tmp_path / "triton") as server:
        states = server.model_states()
        state, reason = states[f"ranker_mlp/{version}"]
        assert state == "UNAVAILABLE"
        assert "protobuf" in reason.lower() or "onnx" in reason.lower(), reason
        assert all(s == "READY" for k, (s, _) in states.items() if not k.startswith("ranker_mlp/"))


def test_a_server_that_cannot_start_reports_its_log(tmp_path: Path, built_repo: Path) -> None:
    server = TritonServer(
        built_repo, workdir=tmp_path / "t", extra_args=["--no-such-flag"], startup_timeout_s=20
    )
    with pytest.raises(Unavailable, match="tritonserver exited"):
        server.start()
    assert server.process is None


def test_killed_server_leaves_shared_memory_that_cleanup_removes(
    built_repo: Path, tmp_path: Path
) -> None:
    server = TritonServer(built_repo, workdir=tmp_path / "t").start()
    assert server.process is not None
    prefix = server.shm_prefix
    assert list(Path("/dev/shm").glob(f"{prefix}*"))
    os.killpg(server.process.pid, signal.SIGKILL)
    server.process.wait()
    assert remove_shared_memory(prefix)
    assert not list(Path("/dev/shm").glob(f"{prefix}*"))
    server.process = None
    server.stop()


def test_dims_round_trip(triton: TritonServer) -> None:
    meta = get(f"http://{triton.http_url}/v2/models/combiner")
    assert isinstance(meta, dict)
    assert np.array(meta["outputs"][0]["shape"]).tolist() == [-1, 1]  # type: ignore[index]


def test_serves_a_read_only_repository(built_repo: Path, tmp_path: Path) -> None:
    """As in a pod: the repository and its parent are read-only and no workdir is given, so
    nothing may be written beside the repository (no staging area, no runtime repository)."""
    volume = tmp_path / "volume"
    shutil.copytree(built_repo, volume / "model_repo")
    with (
        read_only_view(volume, tmp_path / "ro") as view,
        TritonServer(view / "model_repo", models=["user_tower", "combiner"]) as server,
    ):
        assert not server.runtime_repository.is_relative_to(view)
        states = server.model_states()
        assert {name.split("/")[0] for name in states} == {"user_tower", "combiner"}
        assert all(state == "READY" for state, _ in states.values()), states
    assert sorted(p.name for p in volume.iterdir()) == ["model_repo"]


def accepts(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=1.0):
            return True
    except OSError:
        return False


def test_listens_on_the_given_address_only(built_repo: Path, tmp_path: Path) -> None:
    """127.0.0.2 is loopback too, but a server bound to it refuses 127.0.0.1: the address
    reaches all three listeners (HTTP, gRPC, metrics), not only HTTP."""
    ports = [free_port(), free_port(), free_port()]
    with TritonServer(
        built_repo,
        models=["combiner"],
        host="127.0.0.2",
        workdir=tmp_path / "t",
        http_port=ports[0],
        grpc_port=ports[1],
        metrics_port=ports[2],
    ) as server:
        assert server.http_url.startswith("127.0.0.2:")
        with urllib.request.urlopen(server.metrics_url, timeout=5) as response:
            assert b"nv_" in response.read()
        for port in ports:
            assert accepts("127.0.0.2", port), port
            assert not accepts("127.0.0.1", port), port
