"""run_load and its HTTP/gRPC senders against tiny in-test servers on free local ports.

The servers sleep a few milliseconds per request so throughput bounds are predictable
(``concurrency / sleep``), and answer "busy" with a failure so error kinds are exercised.
Each test owns one event loop via ``asyncio.run`` and closes everything it opened on it.
"""

from __future__ import annotations

import asyncio
import json
import math
import struct
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any

import grpc
import pytest
from aiohttp import web
from tritonclient.grpc import service_pb2, service_pb2_grpc

from inference.traffic import (
    GrpcRecommendClient,
    HttpRecommendClient,
    LoadResult,
    RequestFailed,
    degradation,
    percentile_table,
    run_load,
    run_load_sync,
)

SLEEP_S = 0.005


@asynccontextmanager
async def http_server(seen: list[Any]) -> AsyncIterator[str]:
    """Serves /v1/recommend and the OIP infer route; records each request body in ``seen``."""

    async def recommend(request: web.Request) -> web.Response:
        body = await request.json()
        seen.append(body)
        if body["user_id"] == "busy":
            return web.json_response({"error": "busy"}, status=503)
        await asyncio.sleep(1.0 if body["user_id"] == "slow" else SLEEP_S)
        return web.json_response({"items": list(range(body["k"]))})

    async def infer(request: web.Request) -> web.Response:
        body = await request.json()
        seen.append((request.match_info["model"], body))
        await asyncio.sleep(SLEEP_S)
        return web.json_response({"outputs": []})

    app = web.Application()
    app.router.add_post("/v1/recommend", recommend)
    app.router.add_post("/v2/models/{model}/infer", infer)
    # Cancel handlers whose client went away (timeouts), so cleanup does not wait on them.
    runner = web.AppRunner(app, handler_cancellation=True, shutdown_timeout=1.0)
    await runner.setup()
    try:
        await web.TCPSite(runner, "127.0.0.1", 0).start()
        host, port = runner.addresses[0][:2]
        yield f"http://{host}:{port}"
    finally:
        await runner.cleanup()


def with_http(
    body: Callable[[HttpRecommendClient, str], Awaitable[LoadResult]],
) -> tuple[LoadResult, list[Any]]:
    seen: list[Any] = []

    async def main() -> LoadResult:
        async with http_server(seen) as url, HttpRecommendClient() as client:
            return await body(client, url)

    return asyncio.run(main()), seen


def test_by_requests_counts_exactly() -> None:
    def body(client: HttpRecommendClient, url: str) -> Awaitable[LoadResult]:
        return run_load(client.sender(url, ["a", "b", "c"], 7), concurrency=4, requests=120)

    result, seen = with_http(body)
    assert result.requests == 120
    assert result.errors == 0
    assert result.error_rate == 0.0
    assert result.error_kinds == {}
    assert len(seen) == 120
    assert {b["user_id"] for b in seen} == {"a", "b", "c"}
    assert all(b["k"] == 7 for b in seen)
    assert 200 < result.rps < 900
    assert SLEEP_S * 1000 <= result.p50_ms <= result.p90_ms <= result.p99_ms
    assert result.p50_ms <= result.mean_ms * 2
    assert result.duration_s > 0


def test_by_duration_with_warmup() -> None:
    def body(client: HttpRecommendClient, url: str) -> Awaitable[LoadResult]:
        sender = client.sender(url, ["a"], 3)
        return run_load(sender, concurrency=4, duration_s=0.5, warmup_s=0.2, progress=True)

    result, seen = with_http(body)
    assert 200 < result.rps < 900
    assert 0.45 < result.duration_s < 0.7
    # Warmup requests reached the server but are not in the result.
    assert len(seen) > result.requests > 0
    assert result.requests == pytest.approx(result.rps * result.duration_s, abs=1)
    d = result.to_dict()
    assert json.loads(json.dumps(d)) == d
    assert d["requests"] == result.requests


def test_error_kinds_counted_not_raised() -> None:
    def body(client: HttpRecommendClient, url: str) -> Awaitable[LoadResult]:
        return run_load(client.sender(url, ["ok", "busy"], 2), concurrency=2, requests=40)

    result, _ = with_http(body)
    assert result.requests == 40
    assert result.errors == 20
    assert result.error_kinds == {"http 503": 20}
    assert result.error_rate == pytest.approx(0.5)
    assert result.p50_ms <= result.p90_ms <= result.p99_ms


def test_all_failed_gives_nan_and_none() -> None:
    def body(client: HttpRecommendClient, url: str) -> Awaitable[LoadResult]:
        return run_load(client.sender(url, ["busy"], 1), concurrency=2, requests=6)

    result, _ = with_http(body)
    assert result.errors == result.requests == 6
    assert result.rps == 0.0
    assert math.isnan(result.p50_ms)
    assert math.isnan(result.mean_ms)
    d = result.to_dict()
    assert d["p50_ms"] is None
    assert d["p99_ms"] is None
    assert d["mean_ms"] is None
    assert d["error_kinds"] == {"http 503": 6}
    table = percentile_table({"busy": result})
    assert "busy" in table
    assert "6 (100.0%)" in table


def test_timeout_kind() -> None:
    def body(client: HttpRecommendClient, url: str) -> Awaitable[LoadResult]:
        sender = client.sender(url, ["slow"], 1)
        return run_load(sender, concurrency=2, requests=2, timeout_s=0.05)

    result, _ = with_http(body)
    assert result.error_kinds == {"timeout": 2}
    assert result.duration_s < 0.5


def test_oip_sender_body() -> None:
    def body(client: HttpRecommendClient, url: str) -> Awaitable[LoadResult]:
        return run_load(client.oip_sender(url, "ranker", ["u1"], 5), concurrency=1, requests=3)

    result, seen = with_http(body)
    assert result.requests == 3
    assert result.errors == 0
    model, request = seen[0]
    assert model == "ranker"
    assert request == {
        "inputs": [
            {"name": "user_id", "shape": [1], "datatype": "BYTES", "data": ["u1"]},
            {"name": "k", "shape": [1], "datatype": "INT32", "data": [5]},
        ]
    }


def test_exception_class_name_is_kind() -> None:
    async def sender(i: int) -> None:
        if i % 2:
            raise ConnectionResetError
        if i % 4 == 0:
            raise RequestFailed("custom")

    result = run_load_sync(sender, concurrency=3, requests=8)
    assert result.requests == 8
    assert result.error_kinds == {"ConnectionResetError": 4, "custom": 2}


@pytest.mark.parametrize(
    "kwargs",
    [
        {},
        {"duration_s": 1.0, "requests": 10},
        {"requests": 0},
        {"duration_s": 0.0},
        {"requests": 1, "concurrency": 0},
        {"requests": 1, "warmup_s": -1.0},
        {"requests": 1, "timeout_s": 0.0},
    ],
)
def test_bad_arguments(kwargs: dict[str, Any]) -> None:
    async def sender(i: int) -> None:
        return None

    args: dict[str, Any] = {"concurrency": 1, **kwargs}
    with pytest.raises(ValueError):  # noqa: PT011 - each case has its own message
        run_load_sync(sender, **args)


def test_senders_need_open_clients() -> None:
    with pytest.raises(RuntimeError):
        HttpRecommendClient().sender("http://x", ["a"], 1)
    with pytest.raises(RuntimeError):
        GrpcRecommendClient("localhost:1").sender("m", ["a"], 1)


class Servicer(service_pb2_grpc.GRPCInferenceServiceServicer):  # type: ignore[misc]
    """Decodes Triton's raw inputs and records them; "busy" aborts with UNAVAILABLE."""

    def __init__(self) -> None:
        self.seen: list[tuple[str, str, int, tuple[tuple[str, str], ...]]] = []

    async def ModelInfer(self, request: Any, context: Any) -> Any:  # noqa: N802 - gRPC name
        raw_user, raw_k = request.raw_input_contents
        (length,) = struct.unpack_from("<I", raw_user)
        user_id = raw_user[4 : 4 + length].decode()
        assert len(raw_user) == 4 + length
        (k,) = struct.unpack("<i", raw_k)
        assert [(t.name, t.datatype, list(t.shape)) for t in request.inputs] == [
            ("user_id", "BYTES", [1]),
            ("k", "INT32", [1]),
        ]
        md = tuple((m.key, m.value) for m in context.invocation_metadata() if m.key == "x-test")
        self.seen.append((request.model_name, user_id, k, md))
        if user_id == "busy":
            await context.abort(grpc.StatusCode.UNAVAILABLE, "busy")
        await asyncio.sleep(SLEEP_S)
        return service_pb2.ModelInferResponse(model_name=request.model_name, id=request.id)


def with_grpc(
    user_ids: list[str], requests: int, metadata: tuple[tuple[str, str], ...] = ()
) -> tuple[LoadResult, Servicer]:
    servicer = Servicer()

    async def main() -> LoadResult:
        server = grpc.aio.server()
        service_pb2_grpc.add_GRPCInferenceServiceServicer_to_server(servicer, server)
        port = server.add_insecure_port("127.0.0.1:0")
        await server.start()
        try:
            async with GrpcRecommendClient(f"127.0.0.1:{port}") as client:
                sender = client.sender("ranker", user_ids, 9, metadata)
                return await run_load(sender, concurrency=4, requests=requests)
        finally:
            await server.stop(None)

    return asyncio.run(main()), servicer


def test_grpc_sender_round_trip() -> None:
    user_ids = ["alice", "bob", "ünï"]
    result, servicer = with_grpc(user_ids, 60, (("x-test", "1"),))
    assert result.requests == 60
    assert result.errors == 0
    assert len(servicer.seen) == 60
    assert {s[1] for s in servicer.seen} == set(user_ids)
    assert all(s[0] == "ranker" and s[2] == 9 and s[3] == (("x-test", "1"),) for s in servicer.seen)
    assert 200 < result.rps < 900
    assert result.p50_ms <= result.p90_ms <= result.p99_ms


def test_grpc_unavailable_kind() -> None:
    result, servicer = with_grpc(["ok", "busy"], 20)
    assert result.requests == 20
    assert result.error_kinds == {"grpc UNAVAILABLE": 10}
    assert len(servicer.seen) == 20


def test_percentile_table_layout() -> None:
    r = LoadResult(4, 100, 0, 0.0, 1.0, 100.0, 5.0, 6.0, 7.0, 5.5, {})
    lines = percentile_table({"rest": r, "grpc-long-name": r}).splitlines()
    assert lines[0].split() == ["name", "conc", "rps", "p50", "ms", "p99", "ms", "errors"]
    assert len({len(line.rstrip()) for line in lines[2:]}) == 1
    assert lines[2].split() == ["rest", "4", "100.0", "5.00", "7.00", "0"]


def test_percentile_table_shows_the_full_quality_share() -> None:
    r = LoadResult(4, 100, 0, 0.0, 1.0, 100.0, 5.0, 6.0, 7.0, 5.5, {})
    lines = percentile_table({"c1": r, "c8": r}, {"c1": 0.0, "c8": 0.25}).splitlines()
    assert lines[0].split()[-2:] == ["full", "quality"]
    assert lines[2].split()[-1] == "100.0%"
    assert lines[3].split()[-1] == "75.0%"


def test_degradation_reads_the_graphs_counters_between_two_readings() -> None:
    before = {"requests": 10.0, "degraded": 2.0, "ranking:truncated": 2.0}
    after = {"requests": 30.0, "degraded": 7.0, "ranking:truncated": 4.0, "retrieval:popular": 3.0}
    seen = degradation(before, after)
    assert seen["fallback_rate"] == 0.25
    assert seen["fallbacks"] == {"ranking:truncated": 0.1, "retrieval:popular": 0.15}
    assert degradation(after, after)["fallback_rate"] is None
