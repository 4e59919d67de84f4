"""The local launcher's runtime repository is prepared from a canonical repository that is
mounted read-only, as in a pod: only the runtime repository (a temporary directory) is
written, and it links the canonical files rather than copying them."""

from __future__ import annotations

from pathlib import Path

from contract.model_config import parse_config
from inference.triton.server import TritonServer
from inference.triton.shim import build_runtime_repository
from tests.readonly import read_only_view
from tests.unit.training.test_repository import snapshot


def check_runtime(runtime: Path, canonical: Path) -> None:
    for model in ("ranker", "retriever"):
        config = parse_config(runtime / model / "config.pbtxt")
        assert config.backend == "python"
        for version in (1, 2):
            linked = runtime / model / str(version) / "model.onnx"
            assert linked.resolve() == (canonical / model / str(version) / "model.onnx").resolve()
            assert (runtime / model / str(version) / "model.py").is_file()


def test_preparing_the_runtime_repository_leaves_the_canonical_one_untouched(
    volume: Path, tmp_path: Path
) -> None:
    before = snapshot(volume.parent)
    assert build_runtime_repository(volume, tmp_path / "runtime") == ["ranker", "retriever"]
    check_runtime(tmp_path / "runtime", volume)
    assert snapshot(volume.parent) == before


def test_the_launcher_prepares_a_read_only_repository_in_a_temporary_directory(
    volume: Path, tmp_path: Path
) -> None:
    """Everything ``TritonServer.start`` does before spawning tritonserver, on a read-only
    canonical repository and with no workdir given (as ``cascade triton`` runs it)."""
    with read_only_view(volume.parent, tmp_path / "ro") as view:
        canonical = view / "model_repo"
        server = TritonServer(canonical)
        try:
            build_runtime_repository(canonical, server.runtime_repository)
            command = server.command()
            check_runtime(server.runtime_repository, canonical)
            assert not server.runtime_repository.is_relative_to(view)
            assert "--load-model=ranker" in command
            assert "--load-model=retriever" in command
        finally:
            server.stop()
