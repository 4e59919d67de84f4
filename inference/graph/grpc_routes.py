"""The Open Inference Protocol over gRPC: ``GRPCInferenceService``'s methods, by their names.

Serve's gRPC proxy calls a method of the deployment class named as the service's method, so
these are a mix-in of :class:`~inference.graph.ingress.GraphIngress`. The graph answers for
its own two models (the recommender and ``similar_items``); every other model's call is
passed through to Triton unchanged.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

from tritonclient.grpc import service_pb2

from contract.graph_config import GraphConfig
from inference.errors import InferenceError
from inference.graph.replies import grpc_abort, grpc_headers, grpc_status, version_problem
from inference.graph.types import (
    RecommendRequest,
    RecommendResponse,
    SimilarRequest,
    SimilarResponse,
)
from inference.protocol import oip
from inference.triton.passthrough import TritonPassThrough

_MODEL_CONTROL = (
    "model control is not served by the graph: the operator loads models (Model resources); "
    "Triton's own endpoint serves its repository"
)


class GrpcRoutes:
    """The service's methods over what the ingress provides (declared here, set by it)."""

    config: GraphConfig
    passthrough: TritonPassThrough

    def is_graph(self, name: str) -> bool:
        raise NotImplementedError

    def is_similar(self, name: str) -> bool:
        raise NotImplementedError

    async def answer(
        self, request: RecommendRequest, protocol: str, headers: dict[str, str]
    ) -> tuple[RecommendResponse, str]:
        raise NotImplementedError

    async def answer_similar(
        self, request: SimilarRequest, protocol: str, headers: dict[str, str]
    ) -> tuple[SimilarResponse, str]:
        raise NotImplementedError

    def _inputs(self, name: str) -> oip.Inputs:
        return oip.SIMILAR_INPUTS if self.is_similar(name) else oip.RECOMMENDER_INPUTS

    def ServerLive(self, request: Any) -> Any:  # noqa: N802 (the gRPC method's name)
        return service_pb2.ServerLiveResponse(live=True)

    def ServerReady(self, request: Any) -> Any:  # noqa: N802 (the gRPC method's name)
        return service_pb2.ServerReadyResponse(ready=True)  # as /v2/health/ready

    def ServerMetadata(self, request: Any) -> Any:  # noqa: N802 (the gRPC method's name)
        return service_pb2.ServerMetadataResponse(name="cascade", version="1")

    async def ModelReady(self, request: Any, grpc_context: Any = None) -> Any:  # noqa: N802 (the gRPC method's name)
        def ready() -> Any:
            return service_pb2.ModelReadyResponse(ready=True)  # as /v2/health/ready

        return await self._about("ModelReady", request, grpc_context, ready)

    async def ModelMetadata(self, request: Any, grpc_context: Any = None) -> Any:  # noqa: N802 (the gRPC method's name)
        def metadata() -> Any:
            return oip.grpc_model_metadata(
                request.name, max_batch=oip.DEFAULT_MAX_BATCH, inputs=self._inputs(request.name)
            )

        return await self._about("ModelMetadata", request, grpc_context, metadata)

    async def ModelConfig(self, request: Any, grpc_context: Any = None) -> Any:  # noqa: N802 (the gRPC method's name)
        def config() -> Any:
            return oip.grpc_model_config(
                request.name, max_batch=oip.DEFAULT_MAX_BATCH, inputs=self._inputs(request.name)
            )

        return await self._about("ModelConfig", request, grpc_context, config)

    async def ModelStatistics(self, request: Any, grpc_context: Any = None) -> Any:  # noqa: N802 (the gRPC method's name)
        if request.name and not self.is_graph(request.name):
            return await self._pass("ModelStatistics", request, grpc_context)
        grpc_status(grpc_context, "UNIMPLEMENTED", "statistics: see /metrics (Prometheus) instead")
        return service_pb2.ModelStatisticsResponse()

    def RepositoryIndex(self, request: Any, grpc_context: Any = None) -> Any:  # noqa: N802 (the gRPC method's name)
        grpc_status(grpc_context, "UNIMPLEMENTED", _MODEL_CONTROL)
        return service_pb2.RepositoryIndexResponse()

    def RepositoryModelLoad(self, request: Any, grpc_context: Any = None) -> Any:  # noqa: N802 (the gRPC method's name)
        grpc_status(grpc_context, "UNIMPLEMENTED", _MODEL_CONTROL)
        return service_pb2.RepositoryModelLoadResponse()

    def RepositoryModelUnload(self, request: Any, grpc_context: Any = None) -> Any:  # noqa: N802 (the gRPC method's name)
        grpc_status(grpc_context, "UNIMPLEMENTED", _MODEL_CONTROL)
        return service_pb2.RepositoryModelUnloadResponse()

    async def ModelInfer(self, request: Any, grpc_context: Any = None) -> Any:  # noqa: N802 (the gRPC method's name)
        if not self.is_graph(request.model_name):
            return await self._pass("ModelInfer", request, grpc_context)
        headers = grpc_headers(grpc_context)
        try:
            problem = version_problem(request.model_name, request.model_version)
            if problem is not None:
                raise problem
            limits = {
                "default_k": self.config.default_k,
                "max_k": self.config.max_k,
                "max_batch": oip.DEFAULT_MAX_BATCH,
            }
            calls: list[Awaitable[tuple[RecommendResponse | SimilarResponse, str]]]
            if self.is_similar(request.model_name):
                asked = oip.parse_similar_grpc_request(request, **limits)
                calls = [self.answer_similar(r, "grpc", headers) for r in asked]
                k = max(r.k for r in asked)
            else:
                wanted = oip.parse_grpc_request(request, **limits)
                calls = [self.answer(r, "grpc", headers) for r in wanted]
                k = max(r.k for r in wanted)
            served = await asyncio.gather(*calls)
        except InferenceError as exc:
            grpc_abort(grpc_context, exc)
            return service_pb2.ModelInferResponse()
        responses = [response for response, _ in served]
        return oip.grpc_response(request.model_name, "1", responses, request, k=k)

    async def _about(
        self, method: str, request: Any, grpc_context: Any, answer: Callable[[], Any]
    ) -> Any:
        """Triton's answer about another model; the graph's own ``answer`` for itself, or an
        empty response and NOT_FOUND for a version it does not serve."""
        if not self.is_graph(request.name):
            return await self._pass(method, request, grpc_context)
        problem = version_problem(request.name, request.version)
        if problem is not None:
            grpc_abort(grpc_context, problem)
            return getattr(service_pb2, f"{method}Response")()
        return answer()

    async def _pass(self, method: str, request: Any, grpc_context: Any) -> Any:
        """Triton's answer to ``method``, its status kept."""
        reply = await self.passthrough.grpc(method, request)
        if reply.code is not None:
            grpc_status(grpc_context, reply.code, reply.details)
        return reply.response
