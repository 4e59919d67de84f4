"""TritonClient's error mapping, retry policy and local validation, without a Triton server.

The policy is pure (``classify_status``, ``map_error``, ``call_with_retry``) and the client's
I/O sits behind a ``Transport``, so a fake transport drives every branch here. The last tests
use a listening socket that never answers to show that deadlines bound the wall time.
"""

from __future__ import annotations

import socket
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any

import numpy as np
import numpy.typing as npt
import pytest
from tritonclient.utils import InferenceServerException

from contract.signature import Signature, TensorSpec
from inference.errors import (
    BadRequest,
    DeadlineExceeded,
    InferenceError,
    ModelNotFound,
    ServerError,
    Unavailable,
)
from inference.runtime import ModelRuntime, Tensors
from inference.triton.client import (
    RetryPolicy,
    TritonClient,
    TritonProtocol,
    call_with_retry,
    classify_status,
    map_error,
)
from training.model_config import ModelConfigSpec, build_config

SIG = Signature(
    inputs=(TensorSpec("ids", "INT64", (3,)), TensorSpec("dense", "FP32", (2,))),
    outputs=(TensorSpec("y", "FP32", (1,)),),
)
POLICY = RetryPolicy(attempts=4, base_delay_s=0.1, multiplier=2.0, max_delay_s=0.3)


def unavailable() -> InferenceServerException:
    return InferenceServerException(
        "failed to connect to all addresses", status="StatusCode.UNAVAILABLE"
    )


def invalid() -> InferenceServerException:
    return InferenceServerException(
        "[request id: <id_unknown>] unexpected shape for input 'ids' for model 'm'",
        status="StatusCode.INVALID_ARGUMENT",
    )


class FakeClock:
    """A clock that only moves when the fake sleep sleeps."""

    def __init__(self) -> None:
        self.now = 100.0
        self.sleeps: list[float] = []

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds


class Flaky:
    """A fake transport call: raises the queued failures in order, then returns 'ok'."""

    def __init__(self, *failures: BaseException) -> None:
        self.failures = list(failures)
        self.timeouts: list[float | None] = []

    def __call__(self, timeout_s: float | None) -> str:
        self.timeouts.append(timeout_s)
        if self.failures:
            raise self.failures.pop(0)
        return "ok"


# ---- classification ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("status", "kind"),
    [
        ("StatusCode.INVALID_ARGUMENT", BadRequest),
        ("StatusCode.NOT_FOUND", ModelNotFound),
        ("StatusCode.UNAVAILABLE", Unavailable),
        ("StatusCode.RESOURCE_EXHAUSTED", Unavailable),
        ("StatusCode.DEADLINE_EXCEEDED", DeadlineExceeded),
        ("StatusCode.INTERNAL", ServerError),
        ("StatusCode.CANCELLED", ServerError),
        ("400", BadRequest),
        ("404", ModelNotFound),
        ("409", BadRequest),
        ("429", Unavailable),
        ("503", Unavailable),
        ("504", DeadlineExceeded),
        ("500", ServerError),
        (None, ServerError),
        ("garbage", ServerError),
    ],
)
def test_status_maps_to_kind(status: str | None, kind: type[InferenceError]) -> None:
    assert classify_status(status, "something failed") is kind


def test_unknown_model_message_wins_over_status() -> None:
    # Triton answers HTTP 400 for some unknown-model paths; the message is what is specific.
    assert classify_status("400", "Request for unknown model: 'x' is not found") is ModelNotFound
    assert classify_status("StatusCode.UNAVAILABLE", "Request timeout expired") is DeadlineExceeded


def test_map_error_keeps_triton_message_and_model() -> None:
    error = map_error(invalid(), model="m")
    assert isinstance(error, BadRequest)
    assert error.model == "m"
    assert str(error) == "m: unexpected shape for input 'ids' for model 'm'"
    assert error.status == 400


@pytest.mark.parametrize(
    ("exc", "kind"),
    [
        (ConnectionRefusedError(111, "Connection refused"), Unavailable),
        (ConnectionResetError("reset"), Unavailable),
        (OSError("no route to host"), Unavailable),
        (TimeoutError("timed out"), DeadlineExceeded),
        (ValueError("bug"), ServerError),
    ],
)
def test_socket_errors_map_to_kind(exc: BaseException, kind: type[InferenceError]) -> None:
    assert type(map_error(exc, model="m")) is kind


def test_inference_errors_pass_through_unchanged() -> None:
    error = BadRequest("input 'x' is missing", model="m")
    assert map_error(error) is error


# ---- retry policy --------------------------------------------------------------------------


def test_backoff_is_exponential_and_capped() -> None:
    assert [POLICY.delay(n) for n in range(4)] == pytest.approx([0.1, 0.2, 0.3, 0.3])


def test_unavailable_is_retried_with_backoff_then_succeeds() -> None:
    clock, call = FakeClock(), Flaky(unavailable(), ConnectionRefusedError(111, "refused"))
    assert call_with_retry(call, policy=POLICY, sleep=clock.sleep, clock=clock) == "ok"
    assert clock.sleeps == pytest.approx([0.1, 0.2])
    assert len(call.timeouts) == 3


def test_unavailable_every_time_raises_unavailable_after_all_attempts() -> None:
    clock = FakeClock()
    call = Flaky(*(unavailable() for _ in range(10)))
    with pytest.raises(Unavailable, match="m: failed to connect") as info:
        call_with_retry(call, model="m", policy=POLICY, sleep=clock.sleep, clock=clock)
    assert isinstance(info.value.__cause__, InferenceServerException)
    assert len(call.timeouts) == POLICY.attempts
    assert clock.sleeps == pytest.approx([0.1, 0.2, 0.3])


def test_http_503_is_retried() -> None:
    clock = FakeClock()
    call = Flaky(InferenceServerException("Server not ready", status="503"))
    assert call_with_retry(call, policy=POLICY, sleep=clock.sleep, clock=clock) == "ok"
    assert clock.sleeps == pytest.approx([0.1])


@pytest.mark.parametrize(
    ("failure", "kind"),
    [
        (invalid(), BadRequest),
        (InferenceServerException("bad", status="400"), BadRequest),
        (
            InferenceServerException("Deadline Exceeded", "StatusCode.DEADLINE_EXCEEDED"),
            DeadlineExceeded,
        ),
        (TimeoutError("timed out"), DeadlineExceeded),
        (
            InferenceServerException("Request for unknown model: 'm'", "StatusCode.NOT_FOUND"),
            ModelNotFound,
        ),
        (InferenceServerException("boom", status="StatusCode.INTERNAL"), ServerError),
    ],
)
def test_other_failures_are_never_retried(
    failure: BaseException, kind: type[InferenceError]
) -> None:
    clock, call = FakeClock(), Flaky(failure)
    with pytest.raises(kind) as info:
        call_with_retry(call, model="m", policy=POLICY, sleep=clock.sleep, clock=clock)
    assert info.value.__cause__ is failure
    assert len(call.timeouts) == 1
    assert clock.sleeps == []


def test_attempts_get_the_remaining_deadline_and_retries_stop_at_it() -> None:
    clock = FakeClock()
    call = Flaky(*(unavailable() for _ in range(10)))
    with pytest.raises(DeadlineExceeded, match="while retrying") as info:
        call_with_retry(
            call, model="m", policy=POLICY, timeout_s=0.25, sleep=clock.sleep, clock=clock
        )
    # 0.25s allows the 0.1s backoff but not the 0.2s one after it: two attempts in all.
    assert call.timeouts == pytest.approx([0.25, 0.15])
    assert clock.sleeps == pytest.approx([0.1])
    assert isinstance(info.value.__cause__, InferenceServerException)


def test_a_spent_deadline_sends_nothing() -> None:
    call = Flaky()
    with pytest.raises(DeadlineExceeded, match="before the request was sent"):
        call_with_retry(call, timeout_s=0.0)
    assert call.timeouts == []


def test_policy_rejects_nonsense() -> None:
    with pytest.raises(ValueError, match="attempts"):
        RetryPolicy(attempts=0)


# ---- the client over a fake transport ------------------------------------------------------


class FakeTransport:
    """A Triton with one loaded model, ``m`` (max_batch_size 4), and a scripted infer."""

    def __init__(self, infer_failures: Sequence[BaseException] = ()) -> None:
        spec = ModelConfigSpec(
            name="m", signature=SIG, max_batch_size=4, preferred_batch_sizes=(2,)
        )
        self.config = build_config(spec)
        self.loaded = {"m"}
        self.infer_failures = list(infer_failures)
        self.calls: list[str] = []
        self.closed = False

    def infer(
        self,
        model: str,
        version: str,
        inputs: Mapping[str, npt.NDArray[np.generic]],
        outputs: Sequence[str],
        timeout_s: float | None,
    ) -> Tensors:
        self.calls.append("infer")
        if self.infer_failures:
            raise self.infer_failures.pop(0)
        batch = next(iter(inputs.values())).shape[0]
        return {name: np.zeros((batch, 1), np.float32) for name in outputs}

    def model_config(self, model: str, version: str, timeout_s: float | None) -> Any:
        self.calls.append("config")
        if model not in self.loaded or version not in ("", "1"):
            raise InferenceServerException(
                f"Request for unknown model: '{model}' is not found", status="StatusCode.NOT_FOUND"
            )
        return self.config

    def is_model_ready(self, model: str, version: str, timeout_s: float | None) -> bool:
        return model in self.loaded

    def is_server_ready(self, timeout_s: float | None) -> bool:
        return True

    def load_model(self, model: str, timeout_s: float | None) -> None:
        self.loaded.add(model)

    def unload_model(self, model: str, timeout_s: float | None) -> None:
        self.loaded.discard(model)

    def repository_index(self, timeout_s: float | None) -> list[dict[str, Any]]:
        rows: list[dict[str, Any]] = [{"name": "m", "version": "1", "state": "READY"}]
        rows.append({"name": "cold"})
        return rows

    def close(self) -> None:
        self.closed = True


def feed(batch: int = 2) -> dict[str, npt.NDArray[np.generic]]:
    return {
        "ids": np.zeros((batch, 3), np.int64),
        "dense": np.zeros((batch, 2), np.float32),
    }


@pytest.fixture
def transport() -> FakeTransport:
    return FakeTransport()


def make_client(transport: FakeTransport, clock: FakeClock | None = None) -> TritonClient:
    clock = clock or FakeClock()
    return TritonClient("fake:1", retry=POLICY, sleep=clock.sleep, clock=clock, transport=transport)


def test_client_is_a_model_runtime(transport: FakeTransport) -> None:
    client: ModelRuntime = make_client(transport)
    assert client.kind == "triton-grpc"
    out = client.infer("m", feed(3))
    assert out["y"].shape == (3, 1)


def test_config_is_fetched_once_per_model_and_version(transport: FakeTransport) -> None:
    client = make_client(transport)
    for _ in range(3):
        client.infer("m", feed())
    client.infer("m", feed(), version=1)
    assert transport.calls.count("config") == 2
    assert transport.calls.count("infer") == 4


@pytest.mark.parametrize(
    ("inputs", "message"),
    [
        ({**feed(), "ids": np.zeros((2, 3), np.int32)}, "input 'ids' has dtype int32"),
        ({**feed(), "dense": np.zeros((2, 5), np.float32)}, r"input 'dense' has dims \[5\]"),
        ({"ids": np.zeros((2, 3), np.int64)}, "input 'dense' is missing"),
        ({**feed(), "extra": np.zeros((2, 1), np.float32)}, "unknown input 'extra'"),
        (feed(5), "batch size 5 exceeds max_batch_size 4"),
        ({**feed(), "dense": np.zeros((3, 2), np.float32)}, "input 'dense' has batch size 3"),
    ],
)
def test_bad_requests_fail_locally_without_sending(
    transport: FakeTransport, inputs: dict[str, npt.NDArray[np.generic]], message: str
) -> None:
    client = make_client(transport)
    with pytest.raises(BadRequest, match=message) as info:
        client.infer("m", inputs)
    assert info.value.model == "m"
    assert "infer" not in transport.calls


def test_unknown_output_and_version_are_named(transport: FakeTransport) -> None:
    client = make_client(transport)
    with pytest.raises(BadRequest, match="unknown output 'z'"):
        client.infer("m", feed(), outputs=["z"])
    with pytest.raises(ModelNotFound, match="m: Request for unknown model"):
        client.infer("m", feed(), version=7)
    with pytest.raises(BadRequest, match="version must be a positive integer"):
        client.infer("m", feed(), version=0)


def test_unknown_model_is_model_not_found(transport: FakeTransport) -> None:
    with pytest.raises(ModelNotFound, match="ghost: Request for unknown model") as info:
        make_client(transport).infer("ghost", feed())
    assert isinstance(info.value.__cause__, InferenceServerException)


def test_client_retries_unavailable_infer(transport: FakeTransport) -> None:
    transport.infer_failures = [unavailable(), unavailable()]
    clock = FakeClock()
    assert make_client(transport, clock).infer("m", feed())["y"].shape == (2, 1)
    assert clock.sleeps == pytest.approx([0.1, 0.2])


def test_client_does_not_retry_server_rejection_and_refetches_config(
    transport: FakeTransport,
) -> None:
    transport.infer_failures = [invalid()]
    client = make_client(transport)
    with pytest.raises(BadRequest, match="unexpected shape for input 'ids'"):
        client.infer("m", feed())
    assert transport.calls == ["config", "infer"]
    client.infer("m", feed())  # the model may have been reloaded: its config is fetched again
    assert transport.calls == ["config", "infer", "config", "infer"]


def test_check_models_lists_every_problem(transport: FakeTransport) -> None:
    drifted = Signature(
        inputs=(TensorSpec("ids", "INT64", (4,)), TensorSpec("dense", "INT64", (2,))),
        outputs=(TensorSpec("y", "FP32", (1,)), TensorSpec("z", "FP32", (1,))),
    )
    client = make_client(transport)
    client.check_models({"m": SIG})
    with pytest.raises(ModelNotFound) as info:
        client.check_models({"m": drifted, "cold": SIG, "ghost": SIG})
    message = str(info.value)
    assert "m: input 'ids' has dims [3], graph expects [4]" in message
    assert "m: input 'dense' has dtype FP32, graph expects INT64" in message
    assert "m: output 'z' is not served by the model" in message
    assert "cold: not loaded" in message
    assert "ghost: not loaded (not in the server's model repository)" in message
    with pytest.raises(BadRequest, match="m: input 'ids' has dims"):
        client.check_models({"m": drifted})


def test_repository_helpers(transport: FakeTransport) -> None:
    client = make_client(transport)
    assert client.model_versions("m") == {1: "READY"}
    assert client.model_versions("cold") == {}
    with pytest.raises(ModelNotFound):
        client.model_versions("ghost")
    assert [e.name for e in client.repository_index()] == ["m", "cold"]
    client.unload_model("m")
    with pytest.raises(ModelNotFound):
        client.infer("m", feed())
    client.load_model("m")
    client.infer("m", feed())
    assert client.server_ready()


def test_closed_client_is_unavailable(transport: FakeTransport) -> None:
    client = make_client(transport)
    client.close()
    client.close()
    assert transport.closed
    with pytest.raises(Unavailable, match="closed"):
        client.infer("m", feed())
    assert not client.server_ready()


# ---- deadlines bound wall time against a server that never answers -----------------------


@pytest.fixture
def silent_url() -> Iterator[str]:
    """A TCP port that accepts connections (the backlog) and never says a word."""
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(16)
        yield f"127.0.0.1:{listener.getsockname()[1]}"


@pytest.fixture
def refused_url() -> str:
    """A port nothing listens on (bound then released), so connecting is refused."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    return f"127.0.0.1:{port}"


def timed(call: Callable[[], object]) -> float:
    start = time.perf_counter()
    call()
    return time.perf_counter() - start


@pytest.mark.parametrize("protocol", ["grpc", "http"])
def test_deadline_bounds_a_call_to_a_silent_server(
    silent_url: str, protocol: TritonProtocol
) -> None:
    with TritonClient(silent_url, protocol) as client:

        def call() -> None:
            with pytest.raises(DeadlineExceeded):
                client.infer("m", feed(), timeout_s=0.2)

        assert timed(call) < 1.5
        assert not client.server_ready(timeout_s=0.1)


@pytest.mark.parametrize("protocol", ["grpc", "http"])
def test_refused_connection_is_retried_then_unavailable(
    refused_url: str, protocol: TritonProtocol
) -> None:
    sleeps: list[float] = []
    retry = RetryPolicy(attempts=3, base_delay_s=0.01)
    with TritonClient(refused_url, protocol, retry=retry, sleep=sleeps.append) as client:
        with pytest.raises(Unavailable):
            client.infer("m", feed(), timeout_s=5.0)
        assert sleeps == pytest.approx([0.01, 0.02])
        assert client.readiness(1.0) is not None
