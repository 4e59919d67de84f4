"""The gRPC transport never cancels an inference: a caller past its deadline stops waiting,
the call runs on and its late answer is dropped (cancelling into Triton 2.51's python backend
crashes the server). Checked against a stand-in for tritonclient's channel."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import pytest

from inference.errors import Unavailable
from inference.triton.client import GrpcTransport


class Channel:
    """Records each async_infer; the test decides when (and whether) it answers."""

    def __init__(self) -> None:
        self.calls: list[dict[str, Any]] = []

    def async_infer(
        self, model: str, inputs: Any, callback: Callable[..., None], **kw: Any
    ) -> None:
        self.calls.append({"model": model, "callback": callback, **kw})

    def answer(self, number: int, result: Any = None, error: BaseException | None = None) -> None:
        self.calls[number]["callback"](result, error)


class Result:
    def as_numpy(self, name: str) -> Any:
        return np.zeros((2, 1), np.float32)


def transport(max_abandoned: int = 2) -> tuple[GrpcTransport, Channel]:
    grpc = GrpcTransport("127.0.0.1:1", abandon_after_s=30.0, max_abandoned=max_abandoned)
    channel = Channel()
    grpc._client = channel
    return grpc, channel


FEED = {"scores": np.zeros((2, 3), np.float32)}


def test_the_rpc_deadline_is_the_abandon_ceiling_not_the_callers() -> None:
    grpc, channel = transport()
    with pytest.raises(TimeoutError):
        grpc.infer("combiner", "", FEED, ["score"], 0.01)
    assert channel.calls[0]["client_timeout"] == 30.0


def test_an_answer_in_time_is_returned() -> None:
    grpc, channel = transport()
    real = channel.async_infer

    def answer_at_once(*args: Any, **kw: Any) -> None:
        real(*args, **kw)
        channel.answer(len(channel.calls) - 1, Result())

    channel.async_infer = answer_at_once  # type: ignore[method-assign]
    out = grpc.infer("combiner", "", FEED, ["score"], 1.0)
    assert out["score"].shape == (2, 1)
    assert grpc.abandoned == 0


def test_late_answers_are_dropped_and_abandoned_calls_are_bounded() -> None:
    grpc, channel = transport(max_abandoned=2)
    for _ in range(2):
        with pytest.raises(TimeoutError):
            grpc.infer("combiner", "", FEED, ["score"], 0.001)
    assert grpc.abandoned == 2
    with pytest.raises(Unavailable, match="2 calls to the server are still unanswered"):
        grpc.infer("combiner", "", FEED, ["score"], 0.001)
    assert len(channel.calls) == 2  # refused without sending
    channel.answer(0, Result())  # late: dropped, and one slot is free again
    assert grpc.abandoned == 1
    channel.answer(1, None, RuntimeError("late failure"))
    assert grpc.abandoned == 0


def test_an_error_in_time_is_raised() -> None:
    grpc, channel = transport()
    real = channel.async_infer

    def fail_at_once(*args: Any, **kw: Any) -> None:
        real(*args, **kw)
        channel.answer(0, None, ValueError("bad"))

    channel.async_infer = fail_at_once  # type: ignore[method-assign]
    with pytest.raises(ValueError, match="bad"):
        grpc.infer("combiner", "", FEED, ["score"], 1.0)
