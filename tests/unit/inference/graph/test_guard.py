"""The ingress's guard, driven as ASGI: bodies past the limit, admission, the slot returned."""

from __future__ import annotations

import asyncio
import json
from typing import Any

from inference.graph.admission import Admission
from inference.graph.guard import Guard, Limits


class _App:
    """Records the body the guarded app received; answers 200."""

    def __init__(self, admission: Admission | None = None) -> None:
        self.bodies: list[bytes] = []
        self.in_flight_seen: list[int] = []
        self.admission = admission

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        message = await receive()
        self.bodies.append(message["body"])
        if self.admission is not None:
            self.in_flight_seen.append(self.admission.in_flight)
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"{}"})


def _call(
    guard: Guard, path: str, chunks: list[bytes], *, length: int | None = None
) -> tuple[int, dict[str, str], dict[str, Any]]:
    headers = [] if length is None else [(b"content-length", str(length).encode())]
    scope = {"type": "http", "method": "POST", "path": path, "headers": headers}
    pending = [
        {"type": "http.request", "body": c, "more_body": i < len(chunks) - 1}
        for i, c in enumerate(chunks)
    ]
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return pending.pop(0) if pending else {"type": "http.disconnect"}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    asyncio.run(guard(scope, receive, send))
    start = next(m for m in sent if m["type"] == "http.response.start")
    body = b"".join(m.get("body", b"") for m in sent if m["type"] == "http.response.body")
    heads = {k.decode(): v.decode() for k, v in start.get("headers", [])}
    return start["status"], heads, json.loads(body)


def test_a_body_past_the_limit_is_refused_whether_announced_or_chunked() -> None:
    app = _App()
    guard = Guard(app, Limits(max_body_bytes=10))
    status, _, body = _call(guard, "/v1/recommend", [b"x" * 11], length=11)
    assert (status, "limit of 10 bytes" in body["error"]) == (413, True)
    status, _, body = _call(guard, "/v1/recommend", [b"x" * 6, b"x" * 6])
    assert (status, "chunked" in body["error"]) == (413, True)
    assert app.bodies == []
    status, _, _ = _call(guard, "/v1/recommend", [b"x" * 5, b"y" * 5])
    assert (status, app.bodies) == (200, [b"xxxxxyyyyy"])  # chunks replayed as one body


def test_admission_refuses_past_capacity_with_retry_after_and_returns_the_slot() -> None:
    admission = Admission(1)
    app = _App(admission)
    guard = Guard(app, Limits(admission=admission, retry_after_s=3))
    assert _call(guard, "/v1/recommend", [b"{}"])[0] == 200
    assert (app.in_flight_seen, admission.in_flight) == ([1], 0)  # held while served
    assert admission.try_enter()  # now full
    status, headers, body = _call(guard, "/v2/models/recommender/infer", [b"{}"])
    assert (status, headers.get("retry-after")) == (503, "3")
    assert "overloaded" in body["error"]
    assert _call(guard, "/other", [b"{}"])[0] == 200  # outside the guarded paths
    admission.leave()
    assert _call(guard, "/v1/recommend", [b"{}"])[0] == 200
