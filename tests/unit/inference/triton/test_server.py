"""The tritonserver launcher's settings, without starting one: the arguments it passes (where
HTTP, gRPC and metrics bind), where clients reach it, and ``cascade triton --host``."""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

import pytest

import inference.triton.server as server_module
from contract.cli import main as cascade
from contract.cli import parser
from inference.errors import InferenceError
from inference.triton.server import LOOPBACK, TritonServer, client_address, tritonserver_args


def args(host: str) -> list[str]:
    return tritonserver_args(
        runtime_repository=Path("/work/runtime"),
        backend_directory=Path("/work/backends"),
        host=host,
        http_port=8000,
        grpc_port=8001,
        metrics_port=8002,
        models=["user_tower", "combiner"],
        shm_prefix="cascade_x_",
    )


def flags(arguments: list[str]) -> dict[str, str]:
    return dict(a.removeprefix("--").split("=", 1) for a in arguments if "=" in a)


@pytest.mark.parametrize("host", ["0.0.0.0", LOOPBACK, "10.1.2.3", "::"])
def test_http_grpc_and_metrics_bind_to_the_host(host: str) -> None:
    given = flags(args(host))
    assert (given["http-address"], given["grpc-address"], given["metrics-address"]) == (
        host,
        host,
        host,
    )
    assert (given["http-port"], given["grpc-port"], given["metrics-port"]) == (
        "8000",
        "8001",
        "8002",
    )


def test_the_arguments_load_exactly_the_models_asked_for() -> None:
    arguments = args(LOOPBACK)
    assert [a for a in arguments if a.startswith("--load-model=")] == [
        "--load-model=user_tower",
        "--load-model=combiner",
    ]
    assert "--model-control-mode=explicit" in arguments
    assert flags(arguments)["model-repository"] == "/work/runtime"


@pytest.mark.parametrize(
    ("host", "reached_at"),
    [
        ("0.0.0.0", "127.0.0.1"),
        ("", "127.0.0.1"),
        ("::", "[::1]"),
        ("127.0.0.2", "127.0.0.2"),
        ("fd00::5", "[fd00::5]"),
    ],
)
def test_clients_here_reach_a_wildcard_bind_over_loopback(host: str, reached_at: str) -> None:
    assert client_address(host) == reached_at


def test_a_server_binds_to_loopback_unless_told(tmp_path: Path) -> None:
    server = TritonServer(tmp_path)
    assert server.host == LOOPBACK
    assert server.http_url == f"{LOOPBACK}:0"


def test_the_command_carries_the_host_and_writes_only_to_a_temporary_directory(
    tmp_path: Path,
) -> None:
    server = TritonServer(
        tmp_path / "model_repo",
        models=["combiner"],
        host="0.0.0.0",
        http_port=18000,
        grpc_port=18001,
        metrics_port=18002,
    )
    try:
        given = flags(server.command()[1:])
        assert given["http-address"] == given["grpc-address"] == given["metrics-address"]
        assert given["metrics-address"] == "0.0.0.0"
        assert server.http_url == "127.0.0.1:18000"
        assert server.metrics_url == "http://127.0.0.1:18002/metrics"
        runtime = Path(given["model-repository"])
        assert runtime.is_relative_to(tempfile.gettempdir())
        assert not runtime.is_relative_to(tmp_path)
        assert list(tmp_path.iterdir()) == []  # nothing beside the (absent) repository
    finally:
        server.stop()


def test_the_cli_flag_defaults_to_loopback() -> None:
    assert parser().parse_args(["triton"]).host == LOOPBACK
    assert parser().parse_args(["triton", "--host", "0.0.0.0"]).host == "0.0.0.0"


def test_cascade_triton_passes_the_host_to_the_server(monkeypatch: pytest.MonkeyPatch) -> None:
    made: list[dict[str, Any]] = []

    class Refusing:
        def __init__(self, repository: Path, **settings: Any) -> None:
            made.append(settings)

        def start(self) -> None:
            raise InferenceError("not in this test")

        def stop(self) -> None:
            pass

    monkeypatch.setattr(server_module, "TritonServer", Refusing)
    assert cascade(["triton", "--host", "0.0.0.0", "--repo", "nowhere"]) == 2
    [settings] = made
    assert settings["host"] == "0.0.0.0"
