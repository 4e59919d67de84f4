"""The ingress's guard: admission control and the body size limit for every POST.

Plain ASGI, not Starlette's ``BaseHTTPMiddleware`` (which spawns a task group per request, a
measurable cost at this rate). Admission comes first, so a refusal costs no read of the
body. The body is then read here, counting every chunk: a chunked body has no
``Content-Length`` to check up front, and stops being read at the limit, not after 16 MB.

Built with the replica's :class:`Limits` (the REST application is made per replica).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from fastapi.responses import JSONResponse

from inference import metrics
from inference.graph.admission import Admission
from inference.graph.types import GUARDED_PATHS, OVERLOAD_MESSAGE
from inference.protocol import oip


@dataclass(frozen=True)
class Limits:
    """What the guard enforces; ``admission`` None admits everything."""

    max_body_bytes: int = 64 * 1024
    admission: Admission | None = None
    retry_after_s: int = 1


class Guard:
    """ASGI middleware: refuse past admission, refuse bodies past the limit, replay the rest."""

    def __init__(self, app: Any, limits: Limits) -> None:
        self.app = app
        self.limits = limits

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http" or scope["method"] != "POST":
            await self.app(scope, receive, send)
            return
        limits = self.limits
        length = dict(scope["headers"]).get(b"content-length", b"")
        if length.isdigit() and int(length) > limits.max_body_bytes:
            await _too_large(f"request body of {int(length)} bytes", limits, scope, receive, send)
            return
        admission = limits.admission if scope["path"].startswith(GUARDED_PATHS) else None
        if admission is not None and not admission.try_enter():
            refusal = JSONResponse(
                oip.error_body(OVERLOAD_MESSAGE),
                status_code=503,
                headers={"Retry-After": str(limits.retry_after_s)},
            )
            await refusal(scope, receive, send)
            return
        try:
            body = bytearray()
            more = True
            while more:
                message = await receive()
                if message["type"] == "http.disconnect":
                    return
                body += message.get("body", b"")
                more = message.get("more_body", False)
                if len(body) > limits.max_body_bytes:
                    await _too_large("request body (chunked)", limits, scope, receive, send)
                    return
            await self.app(scope, _replay(bytes(body), receive), send)
        finally:
            if admission is not None:
                admission.leave()


def _replay(body: bytes, receive: Any) -> Any:
    """An ASGI ``receive`` that hands the app the body already read, then defers."""
    sent = False

    async def replay() -> Any:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()

    return replay


async def _too_large(what: str, limits: Limits, scope: Any, receive: Any, send: Any) -> None:
    metrics.REJECTED.labels(reason="too_large").inc()
    message = f"{what} exceeds the limit of {limits.max_body_bytes} bytes"
    await JSONResponse(oip.error_body(message), status_code=413)(scope, receive, send)
