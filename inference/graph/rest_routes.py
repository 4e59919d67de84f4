"""The graph's REST application: ``/v1/recommend`` and ``/v1/similar`` for people, the Open
Inference Protocol (KServe v2) for clients such as ``tritonclient``, ``/metrics``, and
FastAPI's OpenAPI document at ``/openapi.json``.

Built per replica (:func:`build_api`), so the guard in front of the routes enforces that
replica's limits and the routes call that replica's graph, with nothing kept in module state.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

from fastapi import FastAPI, Request, Response
from fastapi.responses import JSONResponse

from inference.errors import BadRequest, InferenceError
from inference.graph import replies
from inference.graph.guard import Guard
from inference.graph.types import RecommendResponse, SimilarResponse
from inference.protocol import json_api, oip

if TYPE_CHECKING:
    from inference.graph.ingress import GraphIngress


def build_api(graph: GraphIngress) -> FastAPI:
    """The FastAPI application serving ``graph``, behind the guard with ``graph.limits``; its
    shutdown closes ``graph``."""

    @contextlib.asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        yield
        await graph.aclose()  # Serve runs the app's shutdown when it stops the replica

    api = FastAPI(
        lifespan=lifespan,
        title="Cascade recommendation graph",
        version="1",
        description="Recommendations from the retrieval -> ranking -> combiner -> re-rank "
        "graph, and items similar to an item, over a JSON API and the Open Inference "
        "Protocol (KServe v2).",
    )
    replies.install(api)
    api.add_middleware(Guard, limits=graph.limits)
    routes = RestRoutes(graph)
    route = api.add_api_route
    body = json_api.openapi_body()
    route("/v1/recommend", routes.recommend, methods=["POST"], openapi_extra=body)
    similar_body = json_api.openapi_body(json_api.SimilarBody)
    route("/v1/similar", routes.similar, methods=["POST"], openapi_extra=similar_body)
    route("/v1/experiments/{name}", routes.experiment_report, methods=["GET"])
    route("/metrics", routes.prometheus, methods=["GET"])
    route("/v2/health/live", routes.live, methods=["GET"])
    route("/v2/health/ready", routes.ready, methods=["GET"])
    route("/v2", routes.server_metadata, methods=["GET"])
    for suffix, what in (("", ""), ("/ready", "/ready"), ("/config", "/config")):
        route(f"/v2/models/{{name}}{suffix}", routes.model_get(what), methods=["GET"])
        route(
            f"/v2/models/{{name}}/versions/{{version}}{suffix}",
            routes.model_version_get(what),
            methods=["GET"],
        )
    route("/v2/models/{name}/infer", routes.infer, methods=["POST"])
    route("/v2/models/{name}/versions/{version}/infer", routes.infer_version, methods=["POST"])
    return api


class RestRoutes:
    """The handlers, over one replica's graph."""

    def __init__(self, graph: GraphIngress) -> None:
        self.graph = graph
        self.config = graph.config

    async def recommend(self, request: Request) -> Response:
        """Recommendations for one user, as JSON."""
        try:
            graph_request = json_api.parse(
                await request.body(), default_k=self.config.default_k, max_k=self.config.max_k
            )
        except InferenceError as exc:
            return replies.refused(exc)
        try:
            response, parent = await self.graph.answer(graph_request, "rest", dict(request.headers))
        except InferenceError as exc:
            return replies.error(exc)
        return JSONResponse(response.to_dict(), headers={"traceparent": parent})

    async def similar(self, request: Request) -> Response:
        """Items similar to one item, as JSON."""
        try:
            similar_request = json_api.parse_similar(
                await request.body(), default_k=self.config.default_k, max_k=self.config.max_k
            )
        except InferenceError as exc:
            return replies.refused(exc)
        try:
            response, parent = await self.graph.answer_similar(
                similar_request, "rest", dict(request.headers)
            )
        except InferenceError as exc:
            return replies.error(exc)
        return JSONResponse(response.to_dict(), headers={"traceparent": parent})

    async def experiment_report(self, name: str) -> Response:
        """The experiment's analysis (decisions, effects, SRM, guardrails) as JSON."""
        try:
            return JSONResponse(await self.graph.experiment_report(name))
        except InferenceError as exc:
            return replies.error(exc)

    async def prometheus(self) -> Response:
        from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

        return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)

    async def live(self) -> dict[str, bool]:
        return {"live": True}

    async def ready(self) -> Response:
        """Ready whenever the graph answers. While the model server is away the stages that
        need it serve their fallbacks: still ready (taking the pod out of its Service would
        turn a degraded answer into none), and the body says which stages degrade and why."""
        degraded = await self.graph.degraded()
        if not degraded:
            return JSONResponse({"ready": True})
        return JSONResponse({"ready": True, "degraded": degraded})

    async def server_metadata(self) -> dict[str, Any]:
        return {"name": "cascade", "version": "1", "extensions": []}

    def model_get(self, what: str) -> Any:
        """The handler of ``GET /v2/models/{name}<what>``."""

        async def handler(name: str) -> Response:
            return await self._model_get(name, None, what)

        return handler

    def model_version_get(self, what: str) -> Any:
        """The handler of ``GET /v2/models/{name}/versions/{version}<what>``."""

        async def handler(name: str, version: str) -> Response:
            return await self._model_get(name, version, what)

        return handler

    async def _model_get(self, name: str, version: str | None, what: str) -> Response:
        """Metadata, readiness or config: the graph's own, else Triton's for that model."""
        if not self.graph.is_graph(name):
            return await self._pass("GET", _model_path(name, version, what), b"", {})
        problem = replies.version_problem(name, version)
        if problem is not None:
            return replies.error(problem)
        if what == "/ready":  # answers, degraded or not (see /v2/health/ready)
            return JSONResponse({"name": name, "ready": True})
        inputs = oip.SIMILAR_INPUTS if self.graph.is_similar(name) else oip.RECOMMENDER_INPUTS
        if what == "/config":
            return JSONResponse(
                oip.model_config(name, max_batch=oip.DEFAULT_MAX_BATCH, inputs=inputs)
            )
        return JSONResponse(
            oip.model_metadata(name, max_batch=oip.DEFAULT_MAX_BATCH, inputs=inputs)
        )

    async def infer(self, name: str, request: Request) -> Response:
        return await self._infer(name, None, request)

    async def infer_version(self, name: str, version: str, request: Request) -> Response:
        return await self._infer(name, version, request)

    async def _infer(self, name: str, version: str | None, request: Request) -> Response:
        raw = await request.body()
        if not self.graph.is_graph(name):
            path = _model_path(name, version, "/infer")
            return await self._pass("POST", path, raw, dict(request.headers))
        similar = self.graph.is_similar(name)
        headers = dict(request.headers)
        limits = {
            "default_k": self.config.default_k,
            "max_k": self.config.max_k,
            "max_batch": oip.DEFAULT_MAX_BATCH,
        }
        try:
            problem = replies.version_problem(name, version)
            if problem is not None:
                raise problem
            header = request.headers.get("inference-header-content-length")
            if header is not None and not header.isdigit():
                raise BadRequest(f"Inference-Header-Content-Length: {header!r} is not a length")
            body, binary = oip.split_rest_body(raw, None if header is None else int(header))
            calls: list[Awaitable[tuple[RecommendResponse | SimilarResponse, str]]]
            if similar:
                asked = oip.parse_similar_rest_request(body, binary=binary, **limits)
                calls = [self.graph.answer_similar(r, "rest", headers) for r in asked]
                k = max(r.k for r in asked)
            else:
                wanted = oip.parse_rest_request(body, binary=binary, **limits)
                calls = [self.graph.answer(r, "rest", headers) for r in wanted]
                k = max(r.k for r in wanted)
        except InferenceError as exc:
            return replies.refused(exc)
        try:
            served = await asyncio.gather(*calls)
        except InferenceError as exc:
            return replies.error(exc)
        responses = [response for response, _ in served]
        payload = oip.rest_response(
            name,
            "1",
            responses,
            body.get("id"),
            k=k,
            outputs=oip.rest_requested_outputs(body) or None,
        )
        return JSONResponse(payload, headers={"traceparent": served[0][1]})

    async def _pass(self, method: str, path: str, body: bytes, headers: dict[str, str]) -> Response:
        """Triton's answer to a single-model request, unchanged."""
        try:
            reply = await self.graph.passthrough.http(method, path, body, headers)
        except InferenceError as exc:
            return replies.error(exc)
        return Response(reply.body, status_code=reply.status, headers=reply.headers)


def _model_path(name: str, version: str | None, suffix: str) -> str:
    """Triton's path for a model, its parameters escaped: ``ranker_dcn%3F`` must stay one
    (unknown) model name, not become ``ranker_dcn`` and a query string."""
    path = f"/v2/models/{quote(name, safe='')}"
    if version:
        path += f"/versions/{quote(version, safe='')}"
    return path + suffix
