"""``TritonPassThrough``: single-model Open Inference Protocol requests handed on to Triton.

The graph answers for itself (the model ``recommender``) and passes every other model's
request through, unchanged both ways: bytes over HTTP (binary tensors and the
``Inference-Header-Content-Length`` header intact), protobuf messages over gRPC, Triton's
status and message kept. Decoding into :class:`~inference.triton.client.TritonClient`'s typed
calls would cost a copy each way and could not keep Triton's answer as it was, so this adapter
forwards with asyncio clients instead, over a channel configured as ``TritonClient``'s
(:func:`~inference.triton.client.grpc_channel_options`), and maps a failure to reach
Triton through the same error map.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from inference.errors import Unavailable
from inference.protocol import oip
from inference.triton.client import grpc_channel_options

#: Request headers Triton reads, and response headers a client reads; the rest stay here.
_REQUEST_HEADERS = ("content-type", "inference-header-content-length", "traceparent")
_RESPONSE_HEADERS = ("content-type", "inference-header-content-length")


@dataclass(frozen=True)
class HttpReply:
    """Triton's answer to a passed-through HTTP request."""

    status: int
    body: bytes
    headers: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class GrpcReply:
    """Triton's answer to a passed-through gRPC call: its response, or its status."""

    response: Any
    code: str | None = None  # a grpc.StatusCode name when the call failed
    details: str = ""


class TritonPassThrough:
    """Async clients to one Triton, made on first use (they need the running loop)."""

    def __init__(self, http_url: str, grpc_url: str, *, timeout_s: float = 10.0) -> None:
        self.http_url = http_url
        self.grpc_url = grpc_url
        self.timeout_s = timeout_s
        self._http: Any = None  # aiohttp.ClientSession
        self._channel: Any = None  # grpc.aio.Channel
        self._stub: Any = None

    async def http(self, method: str, path: str, body: bytes, headers: dict[str, str]) -> HttpReply:
        """Send ``method path`` to Triton; raises ``Unavailable`` when Triton cannot be reached.

        An error Triton answers in plain text (an unknown route) is put in the protocol's
        JSON shape, which clients read; any other answer is returned as it came.
        """
        import aiohttp

        if self._http is None:
            self._http = aiohttp.ClientSession(
                f"http://{self.http_url}", timeout=aiohttp.ClientTimeout(total=self.timeout_s)
            )
        keep = {k: v for k, v in headers.items() if k.lower() in _REQUEST_HEADERS}
        try:
            async with self._http.request(method, path, data=body, headers=keep) as reply:
                content = await reply.read()
                if reply.status >= 400 and not reply.content_type.endswith("json"):
                    text = content.decode("utf-8", "replace").strip() or reply.reason or ""
                    error = oip.error_body(f"{path.split('?')[0]}: {text}")
                    return HttpReply(reply.status, json.dumps(error).encode(), _JSON)
                out = {k: v for k, v in reply.headers.items() if k.lower() in _RESPONSE_HEADERS}
                return HttpReply(reply.status, content, out)
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise Unavailable(f"Triton at {self.http_url}: {exc or type(exc).__name__}") from exc

    async def grpc(self, method: str, request: Any) -> GrpcReply:
        """Call ``method`` of Triton's ``GRPCInferenceService`` with ``request`` as it came."""
        import grpc
        from tritonclient.grpc import service_pb2, service_pb2_grpc

        if self._stub is None:
            self._channel = grpc.aio.insecure_channel(self.grpc_url, options=grpc_channel_options())
            self._stub = service_pb2_grpc.GRPCInferenceServiceStub(self._channel)
        try:
            return GrpcReply(await getattr(self._stub, method)(request, timeout=self.timeout_s))
        except grpc.aio.AioRpcError as exc:
            empty = getattr(service_pb2, f"{method}Response")()
            return GrpcReply(empty, exc.code().name, exc.details() or "")

    async def close(self) -> None:
        """Close both clients; a later call opens them again."""
        if self._http is not None:
            session, self._http = self._http, None
            await session.close()
        if self._channel is not None:
            channel, self._channel, self._stub = self._channel, None, None
            await channel.close()


_JSON = {"content-type": "application/json"}

__all__ = ["GrpcReply", "HttpReply", "TritonPassThrough"]
