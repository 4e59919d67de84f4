"""Closed-loop load generation against a running server, for benchmark scripts and the demo.

A closed loop (``concurrency`` workers, each sending its next request only when the last one
returned) measures what a server sustains without an open-loop generator's unbounded queueing,
and running it in its own client process/event loop keeps the client's cost off the server's
loop. The loop is protocol-agnostic: a ``Sender`` sends request number ``i`` and raises on
failure; ``HttpRecommendClient`` and ``GrpcRecommendClient`` build senders for the REST API,
the KServe v2 (OIP) JSON API and Triton's gRPC inference protocol.

    async with HttpRecommendClient() as client:
        result = await run_load(client.sender(url, ["u1", "u2"], k=10), concurrency=8,
                                duration_s=10, warmup_s=1)
    print(percentile_table({"rest": result}))
"""

from __future__ import annotations

import asyncio
import json
import math
import struct
import time
import urllib.request
from collections import Counter
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any, Self

import aiohttp
import grpc
import numpy as np
from tqdm import tqdm
from tritonclient.grpc import service_pb2, service_pb2_grpc

__all__ = [
    "GrpcRecommendClient",
    "HttpRecommendClient",
    "LoadResult",
    "RequestFailed",
    "Sender",
    "percentile_table",
    "run_load",
    "run_load_sync",
]

Sender = Callable[[int], Awaitable[None]]
"""Sends request number ``i``; returns when the response is read, raises when it failed."""


class RequestFailed(Exception):
    """A request the server answered with a failure; ``kind`` is its bucket in ``error_kinds``."""

    def __init__(self, kind: str) -> None:
        super().__init__(kind)
        self.kind = kind


@dataclass(frozen=True)
class LoadResult:
    """What one run measured; ``requests`` counts every finished request, failed ones included.

    Latencies cover successful requests only (a fast 503 would flatter them); with no success
    they are NaN, which ``to_dict`` writes as ``None`` so the result stays valid JSON.
    """

    concurrency: int
    requests: int
    errors: int
    error_rate: float
    duration_s: float
    rps: float
    p50_ms: float
    p90_ms: float
    p99_ms: float
    mean_ms: float
    error_kinds: dict[str, int] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready: floats rounded, NaN as ``None``, error kinds sorted by count."""
        return {
            "concurrency": self.concurrency,
            "requests": self.requests,
            "errors": self.errors,
            "error_rate": _round(self.error_rate, 4),
            "duration_s": _round(self.duration_s, 3),
            "rps": _round(self.rps, 1),
            "p50_ms": _round(self.p50_ms, 3),
            "p90_ms": _round(self.p90_ms, 3),
            "p99_ms": _round(self.p99_ms, 3),
            "mean_ms": _round(self.mean_ms, 3),
            "error_kinds": dict(sorted(self.error_kinds.items(), key=lambda kv: (-kv[1], kv[0]))),
        }


def _round(value: float, digits: int) -> float | None:
    return None if math.isnan(value) else round(value, digits)


def _validate(
    concurrency: int,
    duration_s: float | None,
    requests: int | None,
    warmup_s: float,
    timeout_s: float,
) -> None:
    if concurrency < 1:
        raise ValueError(f"concurrency must be >= 1, got {concurrency}")
    if (duration_s is None) == (requests is None):
        raise ValueError("set exactly one of duration_s and requests")
    if duration_s is not None and not duration_s > 0:
        raise ValueError(f"duration_s must be > 0, got {duration_s}")
    if requests is not None and requests < 1:
        raise ValueError(f"requests must be >= 1, got {requests}")
    if not warmup_s >= 0:
        raise ValueError(f"warmup_s must be >= 0, got {warmup_s}")
    if not timeout_s > 0:
        raise ValueError(f"timeout_s must be > 0, got {timeout_s}")


async def run_load(
    sender: Sender,
    *,
    concurrency: int,
    duration_s: float | None = None,
    requests: int | None = None,
    warmup_s: float = 0.0,
    progress: bool = False,
    desc: str = "load",
    timeout_s: float = 5.0,
) -> LoadResult:
    """Drive ``sender`` from ``concurrency`` closed-loop workers and measure the outcome.

    Runs for ``duration_s`` or until ``requests`` requests were issued (exactly one of them),
    after ``warmup_s`` whose requests are sent but not counted, so connection setup and cold
    caches stay out of the numbers. Failures are counted by kind, never raised, so one bad
    response cannot abort a benchmark; ``duration_s`` of the result spans the first counted
    send to the last counted completion.
    """
    _validate(concurrency, duration_s, requests, warmup_s, timeout_s)
    start = time.perf_counter()
    measure_from = start + warmup_s
    stop_at = measure_from + duration_s if duration_s is not None else math.inf
    latencies_ms: list[float] = []
    kinds: Counter[str] = Counter()
    issued = 0
    next_i = 0
    first_send = math.inf
    last_done = -math.inf

    bar = tqdm(total=requests, desc=desc, unit="req", disable=not progress, leave=False)

    async def worker() -> None:
        nonlocal issued, next_i, first_send, last_done
        while True:
            sent = time.perf_counter()
            if sent >= stop_at:
                return
            counted = sent >= measure_from
            if counted and requests is not None:
                if issued >= requests:
                    return
                issued += 1
            i = next_i
            next_i += 1
            kind: str | None = None
            try:
                await asyncio.wait_for(sender(i), timeout_s)
            except TimeoutError:
                kind = "timeout"
            except RequestFailed as exc:
                kind = exc.kind
            except Exception as exc:
                kind = type(exc).__name__
            done = time.perf_counter()
            if not counted:
                continue
            first_send = min(first_send, sent)
            last_done = max(last_done, done)
            if kind is None:
                latencies_ms.append((done - sent) * 1000.0)
            else:
                kinds[kind] += 1
            bar.update(1)

    try:
        async with asyncio.TaskGroup() as group:
            for _ in range(concurrency):
                group.create_task(worker())
    finally:
        bar.close()

    errors = sum(kinds.values())
    total = len(latencies_ms) + errors
    duration = max(last_done - first_send, 0.0) if total else 0.0
    if latencies_ms:
        lat = np.asarray(latencies_ms, dtype=np.float64)
        p50, p90, p99 = (float(v) for v in np.percentile(lat, [50, 90, 99]))
        mean = float(lat.mean())
    else:
        p50 = p90 = p99 = mean = math.nan
    return LoadResult(
        concurrency=concurrency,
        requests=total,
        errors=errors,
        error_rate=errors / total if total else 0.0,
        duration_s=duration,
        rps=len(latencies_ms) / duration if duration > 0 else 0.0,
        p50_ms=p50,
        p90_ms=p90,
        p99_ms=p99,
        mean_ms=mean,
        error_kinds=dict(kinds),
    )


def run_load_sync(
    sender: Sender,
    *,
    concurrency: int,
    duration_s: float | None = None,
    requests: int | None = None,
    warmup_s: float = 0.0,
    progress: bool = False,
    desc: str = "load",
    timeout_s: float = 5.0,
) -> LoadResult:
    """``run_load`` on a fresh event loop, for scripts that are not async themselves.

    The sender must not be bound to another loop (an aiohttp session or grpc.aio channel is),
    so this suits senders that create their I/O objects lazily on the running loop.
    """
    return asyncio.run(
        run_load(
            sender,
            concurrency=concurrency,
            duration_s=duration_s,
            requests=requests,
            warmup_s=warmup_s,
            progress=progress,
            desc=desc,
            timeout_s=timeout_s,
        )
    )


def _ids(user_ids: Sequence[str]) -> list[str]:
    ids = list(user_ids)
    if not ids:
        raise ValueError("user_ids must not be empty")
    return ids


class HttpRecommendClient:
    """One pooled aiohttp session for all workers, so the loop measures requests, not handshakes.

    ``limit=0`` lifts aiohttp's 100-connection cap, which would otherwise queue workers
    client-side at high concurrency and show up as server latency.
    """

    def __init__(self, *, timeout_s: float | None = 30.0, keepalive_timeout_s: float = 30.0):
        self._timeout = aiohttp.ClientTimeout(total=timeout_s)
        self._keepalive_timeout_s = keepalive_timeout_s
        self._session: aiohttp.ClientSession | None = None

    async def __aenter__(self) -> Self:
        connector = aiohttp.TCPConnector(limit=0, keepalive_timeout=self._keepalive_timeout_s)
        self._session = aiohttp.ClientSession(connector=connector, timeout=self._timeout)
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    @property
    def session(self) -> aiohttp.ClientSession:
        """The open session; using the client outside ``async with`` is a bug, so it raises."""
        if self._session is None:
            raise RuntimeError("HttpRecommendClient is not open; use it as 'async with'")
        return self._session

    def sender(self, base_url: str, user_ids: Sequence[str], k: int) -> Sender:
        """POSTs ``{"user_id", "k"}`` to ``/v1/recommend``, cycling through ``user_ids``."""
        bodies = [json.dumps({"user_id": uid, "k": k}).encode() for uid in _ids(user_ids)]
        return self._post_sender(f"{base_url.rstrip('/')}/v1/recommend", bodies)

    def oip_sender(self, base_url: str, model: str, user_ids: Sequence[str], k: int) -> Sender:
        """POSTs a KServe v2 (OIP) JSON infer request for ``model``, cycling through users."""
        bodies = [
            json.dumps(
                {
                    "inputs": [
                        {"name": "user_id", "shape": [1], "datatype": "BYTES", "data": [uid]},
                        {"name": "k", "shape": [1], "datatype": "INT32", "data": [k]},
                    ]
                }
            ).encode()
            for uid in _ids(user_ids)
        ]
        return self._post_sender(f"{base_url.rstrip('/')}/v2/models/{model}/infer", bodies)

    def _post_sender(self, url: str, bodies: list[bytes]) -> Sender:
        # Bodies are encoded once up front so JSON encoding stays out of the measured latency.
        session = self.session
        headers = {"Content-Type": "application/json"}

        async def send(i: int) -> None:
            async with session.post(url, data=bodies[i % len(bodies)], headers=headers) as resp:
                await resp.read()
                if not 200 <= resp.status < 300:
                    raise RequestFailed(f"http {resp.status}")

        return send


def _infer_request(model: str, user_id: str, k: int) -> Any:
    raw_user = user_id.encode()
    return service_pb2.ModelInferRequest(
        model_name=model,
        inputs=[
            service_pb2.ModelInferRequest.InferInputTensor(
                name="user_id", datatype="BYTES", shape=[1]
            ),
            service_pb2.ModelInferRequest.InferInputTensor(name="k", datatype="INT32", shape=[1]),
        ],
        # Triton's raw BYTES layout: each element is a little-endian uint32 length, then bytes.
        raw_input_contents=[struct.pack("<I", len(raw_user)) + raw_user, struct.pack("<i", k)],
    )


class GrpcRecommendClient:
    """One grpc.aio channel (HTTP/2, multiplexed) shared by all workers, talking Triton's protocol.

    The raw stub is used instead of tritonclient's aio client so per-request cost is one
    prebuilt protobuf message, not tensor packing on the client's loop.
    """

    def __init__(self, target: str) -> None:
        self._target = target
        self._channel: Any = None
        self._stub: Any = None

    async def __aenter__(self) -> Self:
        self._channel = grpc.aio.insecure_channel(self._target)
        self._stub = service_pb2_grpc.GRPCInferenceServiceStub(self._channel)
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._channel is not None:
            await self._channel.close()
            self._channel = None
            self._stub = None

    def sender(
        self,
        model: str,
        user_ids: Sequence[str],
        k: int,
        metadata: Sequence[tuple[str, str]] = (),
    ) -> Sender:
        """Sends ``ModelInfer`` for ``model`` with inputs ``user_id`` (BYTES) and ``k`` (INT32)."""
        if self._stub is None:
            raise RuntimeError("GrpcRecommendClient is not open; use it as 'async with'")
        stub = self._stub
        messages = [_infer_request(model, uid, k) for uid in _ids(user_ids)]
        md = tuple(metadata) or None

        async def send(i: int) -> None:
            try:
                await stub.ModelInfer(messages[i % len(messages)], metadata=md)
            except grpc.aio.AioRpcError as exc:
                raise RequestFailed(f"grpc {exc.code().name}") from exc

        return send


def _fmt(value: float, digits: int) -> str:
    return "-" if math.isnan(value) else f"{value:.{digits}f}"


def metric_totals(url: str) -> dict[str, float]:
    """Requests answered, degraded requests, and each fallback's count, from /metrics."""
    with urllib.request.urlopen(f"{url}/metrics", timeout=10) as reply:
        text = reply.read().decode()
    totals: dict[str, float] = {"requests": 0.0, "degraded": 0.0}
    for line in text.splitlines():
        name, _, value = line.rpartition(" ")
        if name.startswith("cascade_requests_total{"):
            totals["requests"] += float(value)
        elif name == "cascade_degraded_requests_total":
            totals["degraded"] += float(value)
        elif name.startswith("cascade_fallbacks_total{"):
            labels = dict(part.split("=", 1) for part in name[name.index("{") + 1 : -1].split(","))
            key = f"{labels['stage'].strip(chr(34))}:{labels['fallback'].strip(chr(34))}"
            totals[key] = totals.get(key, 0.0) + float(value)
    return totals


def degradation(before: dict[str, float], after: dict[str, float]) -> dict[str, Any]:
    """Between two :func:`metric_totals` readings: the share of answers that carried a
    fallback (None when none were answered) and each fallback's share."""
    served = after["requests"] - before["requests"]
    if not served:
        return {"fallback_rate": None, "fallbacks": {}}
    kinds = {
        key: round((after[key] - before.get(key, 0.0)) / served, 4)
        for key in after
        if key not in ("requests", "degraded") and after[key] > before.get(key, 0.0)
    }
    rate = (after["degraded"] - before["degraded"]) / served
    return {"fallback_rate": round(rate, 4), "fallbacks": kinds}


def percentile_table(
    results: Mapping[str, LoadResult], quality: Mapping[str, float | None] | None = None
) -> str:
    """A fixed-width table of the headline numbers, one row per named run, for console output;
    with ``quality`` (run -> fallback rate, from :func:`degradation`), a column with the share
    of answers served at full quality (no fallback)."""
    width = max([len("name"), *(len(name) for name in results)])
    header = f"{'name':<{width}}  {'conc':>5}  {'rps':>9}  {'p50 ms':>8}  {'p99 ms':>8}  errors"
    if quality is not None:
        header += "  full quality"
    lines = [header, "-" * len(header)]
    for name, r in results.items():
        errors = f"{r.errors} ({r.error_rate:.1%})" if r.errors else "0"
        line = (
            f"{name:<{width}}  {r.concurrency:>5}  {r.rps:>9.1f}  {_fmt(r.p50_ms, 2):>8}  "
            f"{_fmt(r.p99_ms, 2):>8}  {errors:<6}"
        )
        if quality is not None:
            rate = quality.get(name)
            line += f"  {'-' if rate is None else f'{1.0 - rate:.1%}':>12}"
        lines.append(line.rstrip())
    return "\n".join(lines)
