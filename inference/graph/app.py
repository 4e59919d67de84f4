"""The graph as a Ray Serve application: an ingress and a batched ranking deployment.

Two deployments, not one per stage: on a small machine every Serve hop costs about a
millisecond of CPU, so the cheap steps (features, retrieval, re-rank) run inside the ingress,
and only ranking, the expensive stage that gains from batching concurrent requests into one
Triton call per model, is its own deployment, scaled separately. ``build_app`` wires them
with ``.bind()``.

The ingress speaks the Open Inference Protocol (KServe v2) over REST and gRPC, for the graph
as a model named ``recommender`` and, passed through to Triton, for every single model; plus
``/v1/recommend`` for people, ``/metrics``, and FastAPI's OpenAPI document at
``/openapi.json``.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar, cast
from urllib.parse import quote

import numpy as np
from fastapi import FastAPI, Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from ray import serve
from ray.serve.handle import DeploymentHandle
from starlette.exceptions import HTTPException as StarletteHTTPException
from tritonclient.grpc import service_pb2

from ab_router.design import Catalog as ExperimentCatalog
from ab_router.events import EventStore
from ab_router.stores import open_store
from contract.errors import grpc_code_name
from contract.graph_config import GraphConfig
from inference import metrics
from inference.errors import BadRequest, InferenceError, ModelNotFound, Unavailable
from inference.graph.admission import Admission
from inference.graph.components import Components, load_components, resolve_versions
from inference.graph.experiments import CatalogWatcher, ExperimentRouter, read_catalog, report
from inference.graph.recommender import Recommender, annotate
from inference.graph.settings import GraphSettings
from inference.graph.stages import RankJob, RankResult
from inference.graph.telemetry import attached, extract, traceparent, tracer
from inference.graph.types import (
    GUARDED_PATHS,
    OVERLOAD_MESSAGE,
    WARMUP_HEADER,
    RecommendRequest,
    RecommendResponse,
)
from inference.protocol import json_api, oip

log = logging.getLogger("cascade.inference")

api = FastAPI(
    title="Cascade recommendation graph",
    version="1",
    description="Recommendations from the retrieval -> ranking -> combiner -> re-rank graph, "
    "over a JSON API and the Open Inference Protocol (KServe v2).",
)


@api.exception_handler(StarletteHTTPException)
async def _http_error(request: Request, exc: StarletteHTTPException) -> Response:
    """Unknown routes and methods in the same shape as every other error (the protocol's
    ``{"error": ...}``; FastAPI's own is ``{"detail": ...}``, which clients cannot read)."""
    message = f"{request.method} {request.url.path}: {exc.detail}"
    return JSONResponse(oip.error_body(message), status_code=exc.status_code, headers=exc.headers)


@api.exception_handler(RequestValidationError)
async def _validation_error(request: Request, exc: RequestValidationError) -> Response:
    problems = "; ".join(
        f"{'.'.join(str(p) for p in error['loc'])}: {error['msg']}" for error in exc.errors()
    )
    return JSONResponse(oip.error_body(problems or "invalid request"), status_code=400)


@api.exception_handler(Exception)
async def _internal_error(request: Request, exc: Exception) -> Response:
    log.exception("unexpected failure answering %s %s", request.method, request.url.path)
    body = oip.error_body(f"internal error ({type(exc).__name__}); the server log has details")
    return JSONResponse(body, status_code=500)


_QUIET = {"enable_access_log": False, "log_level": "WARNING"}


# --------------------------------------------------------------------------------------------
# Ranking
# --------------------------------------------------------------------------------------------


_F = TypeVar("_F", bound=Callable[..., Any])
#: ``serve.batch``, typed as the identity its callers see (its stubs reject methods).
_batched = cast(Callable[[_F], _F], serve.batch(max_batch_size=8, batch_wait_timeout_s=0.001))


class RankingService:
    """Ranks the candidates of concurrent requests together: one call per ranker per batch."""

    def __init__(self, settings: GraphSettings, components: Components | None = None) -> None:
        """``components``: already loaded (with a ranker) by an ingress ranking inline."""
        self.components = components or load_components(settings, with_ranker=True)
        self.config = settings.graph
        batched: Any = self.rank_batch  # serve.batch adds these setters
        batched.set_max_batch_size(self.config.max_batch_requests)
        batched.set_batch_wait_timeout_s(self.config.batch_wait_ms / 1000.0)
        self._pool = ThreadPoolExecutor(2, thread_name_prefix="ranking")

    async def rank(self, job: RankJob, timeout_s: float, carrier: dict[str, str]) -> RankResult:
        batched: Any = self.rank_batch
        result: RankResult = await batched(job, time.monotonic() + timeout_s, carrier)
        return result

    @_batched
    async def rank_batch(
        self, jobs: list[RankJob], expiries: list[float], carriers: list[dict[str, str]]
    ) -> list[RankResult]:
        start_ns = time.time_ns()
        loop = asyncio.get_running_loop()
        delay = self.config.faults.delay_ms.get("ranking", 0.0) / 1000.0

        def work() -> list[RankResult]:
            # Jobs whose caller has already given up are dropped, not ranked: under overload
            # they would hold the models while live requests time out behind them.
            ranker = self.components.ranker
            assert ranker is not None
            now = time.monotonic()
            # Also dropped: jobs left with less time than ranking the minimum would take.
            least = ranker.min_ranked * ranker.seconds_per_candidate
            live = [i for i, expiry in enumerate(expiries) if expiry - now > least]
            results = [RankResult(np.zeros(0, np.float32)) for _ in jobs]
            if not live:
                return results
            if delay:
                time.sleep(delay)
            timeout = max(0.001, min(expiries[i] for i in live) - time.monotonic())
            try:
                ranked = ranker([jobs[i] for i in live], timeout)
            except InferenceError as exc:
                # An empty result tells the caller to fall back; raising would cost a
                # logged traceback per job in Serve, the moment the machine can least afford it.
                log.debug("ranking failed for a batch of %d: %s", len(live), exc)
                return results
            for i, result in zip(live, ranked, strict=True):
                results[i] = result
            return results

        try:
            return await loop.run_in_executor(self._pool, work)
        finally:
            end_ns = time.time_ns()
            spans = tracer()
            for carrier in carriers:
                span = spans.start_span(
                    "ranking.batch", context=extract(carrier), start_time=start_ns
                )
                span.set_attribute("cascade.batch_size", len(jobs))
                span.end(end_time=end_ns)


# --------------------------------------------------------------------------------------------
# Ingress
# --------------------------------------------------------------------------------------------

_admission: Admission | None = None
_max_body = 64 * 1024
#: The stages whose models the model server (Triton) runs; each has a fallback.
MODEL_SERVER_STAGES = ("retrieval", "ranking")
_retry_after = "1"


class _Guard:
    """Admission control and the body size limit for every POST, as plain ASGI: Starlette's
    ``BaseHTTPMiddleware`` spawns a task group per request, a measurable cost at this rate.

    Admission comes first, so a refusal costs no read of the body. The body is then read
    here, counting every chunk: a chunked body has no ``Content-Length`` to check up front,
    and stops being read at the limit rather than after 16 MB.
    """

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http" or scope["method"] != "POST":
            await self.app(scope, receive, send)
            return
        length = dict(scope["headers"]).get(b"content-length", b"")
        if length.isdigit() and int(length) > _max_body:
            await _too_large(f"request body of {int(length)} bytes", scope, receive, send)
            return
        admitted = _admission is not None and scope["path"].startswith(GUARDED_PATHS)
        if admitted and _admission is not None and not _admission.try_enter():
            refusal = JSONResponse(
                oip.error_body(OVERLOAD_MESSAGE),
                status_code=503,
                headers={"Retry-After": _retry_after},
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
                if len(body) > _max_body:
                    await _too_large("request body (chunked)", scope, receive, send)
                    return
            await self.app(scope, _replay(bytes(body), receive), send)
        finally:
            if admitted and _admission is not None:
                _admission.leave()


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


async def _too_large(what: str, scope: Any, receive: Any, send: Any) -> None:
    metrics.REJECTED.labels(reason="too_large").inc()
    message = f"{what} exceeds the limit of {_max_body} bytes"
    await JSONResponse(oip.error_body(message), status_code=413)(scope, receive, send)


api.add_middleware(_Guard)


def _error(exc: InferenceError) -> JSONResponse:
    return JSONResponse(oip.error_body(str(exc)), status_code=exc.status)


def _refused(exc: InferenceError) -> JSONResponse:
    """The answer to a REST request refused before it reached the graph, counted as sent."""
    metrics.REQUESTS.labels(protocol="rest", code=str(exc.status), variant="none").inc()
    return _error(exc)


class GraphIngress:
    """HTTP and gRPC front of the graph; holds the in-process stages (features, retrieval,
    re-rank) and a handle to the ranking deployment."""

    def __init__(self, ranking: DeploymentHandle[Any] | None, settings: GraphSettings) -> None:
        global _admission, _max_body, _retry_after
        self.settings = settings
        self.config = settings.graph
        _admission = Admission(self.config.admission.max_in_flight)
        _max_body = self.config.admission.max_body_bytes
        _retry_after = str(self.config.admission.retry_after_s)
        inline = ranking is None
        self.components: Components = load_components(settings, with_ranker=inline)
        self._ranking = ranking
        self._local_ranking = RankingService(settings, self.components) if inline else None
        self._pool = ThreadPoolExecutor(16, thread_name_prefix="graph")
        self._http: Any = None  # aiohttp session to Triton, made on first use (needs a loop)
        self._grpc: Any = None
        self.recommender = self._recommender(self.config)
        self.router: ExperimentRouter | None = None
        self.store: EventStore | None = None
        self.experiments: ExperimentCatalog | None = None
        self.variants: dict[str, Recommender] = {}
        if settings.experiments is not None:
            self.experiments = read_catalog(settings.experiments)
        if settings.event_store is not None:
            self.store = open_store(settings.event_store)
        if settings.experiment is not None:
            if self.experiments is None:
                raise InferenceError("experiment: set, but no experiments file was given")
            self.router = ExperimentRouter(
                self.experiments, settings.experiment, self.config, self.store
            )
            self.variants = {v: self._recommender(c) for v, c in self.router.configs.items()}
            assert settings.experiments is not None
            self._watcher = CatalogWatcher(settings.experiments, self._reload_experiments)
        metrics.record_versions(self.components.versions)

    def _reload_experiments(self, catalog: ExperimentCatalog) -> None:
        """New weights of the served experiment (a canary step) take effect in place."""
        assert self.router is not None
        refused = self.router.update(catalog)
        if refused is not None:
            log.warning("experiments file changed; not applied: %s", refused)
            return
        self.experiments = catalog
        weights = {v.name: v.weight for v in self.router.experiment.variants}
        log.info("experiment %s now splits %s", self.router.experiment.name, weights)

    def _recommender(self, config: GraphConfig) -> Recommender:
        versions = (
            self.components.versions
            if config.model_versions == self.config.model_versions
            else resolve_versions(self.settings.repository, config.model_versions)
        )
        return self.components.recommender(config, versions, rank=self._rank, executor=self._pool)

    async def _rank(self, job: RankJob, timeout_s: float, carrier: dict[str, str]) -> RankResult:
        if self._local_ranking is not None:
            return await self._local_ranking.rank(job, timeout_s, carrier)
        assert self._ranking is not None
        result: RankResult = await self._ranking.rank.remote(job, timeout_s, carrier)
        return result

    async def _serve(
        self, request: RecommendRequest, protocol: str, headers: dict[str, str]
    ) -> tuple[RecommendResponse, str]:
        start = time.perf_counter()
        code, variant = "200", "none"
        try:
            with (
                attached(extract(headers)),
                tracer().start_as_current_span("recommend", record_exception=False) as span,
            ):
                recommender, route = self.recommender, None
                if self.router is not None:
                    route = self.router.route(request.user_id)
                    variant = route.variant or "none"
                    recommender = self.variants.get(route.variant or "", self.recommender)
                response = await recommender.recommend(request)
                if self.router is not None and route is not None:
                    response.assignment = route.assignment
                    if route.variant is not None and headers.get(WARMUP_HEADER) != "1":
                        self.router.served(request.user_id, route.variant)
                annotate(response)
                return response, traceparent(span)
        except InferenceError as exc:
            code = str(exc.status)
            raise
        except BaseException:
            code = "500"  # what the client receives (see _internal_error)
            raise
        finally:
            metrics.REQUESTS.labels(protocol=protocol, code=code, variant=variant).inc()
            metrics.REQUEST_SECONDS.labels(protocol=protocol, variant=variant).observe(
                time.perf_counter() - start
            )

    # ---- JSON API --------------------------------------------------------------------------

    @api.post("/v1/recommend", openapi_extra=json_api.openapi_body())
    async def recommend(self, request: Request) -> Response:
        try:
            graph_request = json_api.parse(
                await request.body(), default_k=self.config.default_k, max_k=self.config.max_k
            )
        except InferenceError as exc:
            return _refused(exc)
        try:
            response, parent = await self._serve(graph_request, "rest", dict(request.headers))
        except InferenceError as exc:
            return _error(exc)
        return JSONResponse(response.to_dict(), headers={"traceparent": parent})

    @api.get("/v1/experiments/{name}")
    async def experiment_report(self, name: str) -> Response:
        """The experiment's analysis (decisions, effects, SRM, guardrails) as JSON."""
        if self.experiments is None or self.store is None:
            return _error(
                ModelNotFound("no experiments are configured (--experiments, --event-store)")
            )
        catalog, store = self.experiments, self.store
        loop = asyncio.get_running_loop()
        try:
            body = await loop.run_in_executor(self._pool, lambda: report(catalog, store, name))
        except InferenceError as exc:
            return _error(exc)
        return JSONResponse(body)

    @api.get("/metrics")
    async def prometheus(self) -> Response:
        from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

        return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)

    # ---- Open Inference Protocol over REST -------------------------------------------------

    @api.get("/v2/health/live")
    async def live(self) -> dict[str, bool]:
        return {"live": True}

    @api.get("/v2/health/ready")
    async def ready(self) -> Response:
        """Ready whenever the graph answers. While the model server is away the stages that
        need it serve their fallbacks: still ready (taking the pod out of its Service would
        turn a degraded answer into none), and the body says which stages degrade and why."""
        loop = asyncio.get_running_loop()
        reason = await loop.run_in_executor(self._pool, self.components.readiness)
        if reason is None:
            return JSONResponse({"ready": True})
        degraded = {stage: f"model server: {reason}" for stage in MODEL_SERVER_STAGES}
        return JSONResponse({"ready": True, "degraded": degraded})

    @api.get("/v2")
    async def server_metadata(self) -> dict[str, Any]:
        return {"name": "cascade", "version": "1", "extensions": []}

    @api.get("/v2/models/{name}")
    async def model_metadata(self, name: str) -> Response:
        return await self._model_get(name, None, "")

    @api.get("/v2/models/{name}/versions/{version}")
    async def model_version_metadata(self, name: str, version: str) -> Response:
        return await self._model_get(name, version, "")

    @api.get("/v2/models/{name}/ready")
    async def model_ready(self, name: str) -> Response:
        return await self._model_get(name, None, "/ready")

    @api.get("/v2/models/{name}/versions/{version}/ready")
    async def model_version_ready(self, name: str, version: str) -> Response:
        return await self._model_get(name, version, "/ready")

    @api.get("/v2/models/{name}/config")
    async def model_config(self, name: str) -> Response:
        return await self._model_get(name, None, "/config")

    @api.get("/v2/models/{name}/versions/{version}/config")
    async def model_version_config(self, name: str, version: str) -> Response:
        return await self._model_get(name, version, "/config")

    async def _model_get(self, name: str, version: str | None, what: str) -> Response:
        """Metadata, readiness or config: the graph's own, else Triton's for that model."""
        if name != self.config.name:
            return await self._proxy_http("GET", _model_path(name, version, what), b"", {})
        problem = _version_problem(name, version)
        if problem is not None:
            return _error(problem)
        if what == "/ready":  # answers, degraded or not (see /v2/health/ready)
            return JSONResponse({"name": name, "ready": True})
        if what == "/config":
            return JSONResponse(oip.model_config(name, max_batch=oip.DEFAULT_MAX_BATCH))
        return JSONResponse(oip.model_metadata(name, max_batch=oip.DEFAULT_MAX_BATCH))

    @api.post("/v2/models/{name}/infer")
    async def infer(self, name: str, request: Request) -> Response:
        return await self._infer(name, None, request)

    @api.post("/v2/models/{name}/versions/{version}/infer")
    async def infer_version(self, name: str, version: str, request: Request) -> Response:
        return await self._infer(name, version, request)

    async def _infer(self, name: str, version: str | None, request: Request) -> Response:
        raw = await request.body()
        if name != self.config.name:
            path = _model_path(name, version, "/infer")
            return await self._proxy_http("POST", path, raw, dict(request.headers))
        try:
            problem = _version_problem(name, version)
            if problem is not None:
                raise problem
            header = request.headers.get("inference-header-content-length")
            if header is not None and not header.isdigit():
                raise BadRequest(f"Inference-Header-Content-Length: {header!r} is not a length")
            body, binary = oip.split_rest_body(raw, None if header is None else int(header))
            requests = oip.parse_rest_request(
                body,
                default_k=self.config.default_k,
                max_k=self.config.max_k,
                max_batch=oip.DEFAULT_MAX_BATCH,
                binary=binary,
            )
        except InferenceError as exc:
            return _refused(exc)
        try:
            served = await asyncio.gather(
                *(self._serve(r, "rest", dict(request.headers)) for r in requests)
            )
        except InferenceError as exc:
            return _error(exc)
        responses = [response for response, _ in served]
        payload = oip.rest_response(
            name,
            "1",
            responses,
            body.get("id"),
            k=max(r.k for r in requests),
            outputs=oip.rest_requested_outputs(body) or None,
        )
        return JSONResponse(payload, headers={"traceparent": served[0][1]})

    async def _proxy_http(
        self, method: str, path: str, body: bytes, headers: dict[str, str]
    ) -> Response:
        """Pass a single-model request through to Triton, unchanged both ways."""
        import aiohttp

        if self._http is None:
            self._http = aiohttp.ClientSession(f"http://{self.settings.triton_http}")
        keep = {
            k: v
            for k, v in headers.items()
            if k.lower() in ("content-type", "inference-header-content-length", "traceparent")
        }
        try:
            async with self._http.request(method, path, data=body, headers=keep) as reply:
                content = await reply.read()
                out = {
                    k: v
                    for k, v in reply.headers.items()
                    if k.lower() in ("content-type", "inference-header-content-length")
                }
                if reply.status >= 400 and not reply.content_type.endswith("json"):
                    # Triton answers some errors (an unknown route) in plain text; clients
                    # read the protocol's JSON shape and would show an empty message.
                    text = content.decode("utf-8", "replace").strip() or reply.reason or ""
                    message = f"{path.split('?')[0]}: {text}"
                    return JSONResponse(oip.error_body(message), status_code=reply.status)
                return Response(content, status_code=reply.status, headers=out)
        except aiohttp.ClientError as exc:
            return _error(Unavailable(f"Triton at {self.settings.triton_http}: {exc}"))

    # ---- Open Inference Protocol over gRPC (methods named as in the service) ---------------

    def ServerLive(self, request: Any) -> Any:  # noqa: N802 (the gRPC method's name)
        return service_pb2.ServerLiveResponse(live=True)

    def ServerReady(self, request: Any) -> Any:  # noqa: N802 (the gRPC method's name)
        return service_pb2.ServerReadyResponse(ready=True)  # as /v2/health/ready

    def ServerMetadata(self, request: Any) -> Any:  # noqa: N802 (the gRPC method's name)
        return service_pb2.ServerMetadataResponse(name="cascade", version="1")

    async def ModelReady(self, request: Any, grpc_context: Any = None) -> Any:  # noqa: N802 (the gRPC method's name)
        if request.name != self.config.name:
            return await self._proxy_grpc("ModelReady", request, grpc_context)
        if _grpc_version_refused(grpc_context, request.name, request.version):
            return service_pb2.ModelReadyResponse()
        return service_pb2.ModelReadyResponse(ready=True)  # as /v2/health/ready

    async def ModelMetadata(self, request: Any, grpc_context: Any = None) -> Any:  # noqa: N802 (the gRPC method's name)
        if request.name != self.config.name:
            return await self._proxy_grpc("ModelMetadata", request, grpc_context)
        if _grpc_version_refused(grpc_context, request.name, request.version):
            return service_pb2.ModelMetadataResponse()
        return oip.grpc_model_metadata(request.name, max_batch=oip.DEFAULT_MAX_BATCH)

    async def ModelConfig(self, request: Any, grpc_context: Any = None) -> Any:  # noqa: N802 (the gRPC method's name)
        if request.name != self.config.name:
            return await self._proxy_grpc("ModelConfig", request, grpc_context)
        if _grpc_version_refused(grpc_context, request.name, request.version):
            return service_pb2.ModelConfigResponse()
        return oip.grpc_model_config(request.name, max_batch=oip.DEFAULT_MAX_BATCH)

    async def ModelStatistics(self, request: Any, grpc_context: Any = None) -> Any:  # noqa: N802 (the gRPC method's name)
        if request.name and request.name != self.config.name:
            return await self._proxy_grpc("ModelStatistics", request, grpc_context)
        _grpc_unimplemented(grpc_context, "statistics: see /metrics (Prometheus) instead")
        return service_pb2.ModelStatisticsResponse()

    def RepositoryIndex(self, request: Any, grpc_context: Any = None) -> Any:  # noqa: N802 (the gRPC method's name)
        _grpc_unimplemented(grpc_context, _MODEL_CONTROL)
        return service_pb2.RepositoryIndexResponse()

    def RepositoryModelLoad(self, request: Any, grpc_context: Any = None) -> Any:  # noqa: N802 (the gRPC method's name)
        _grpc_unimplemented(grpc_context, _MODEL_CONTROL)
        return service_pb2.RepositoryModelLoadResponse()

    def RepositoryModelUnload(self, request: Any, grpc_context: Any = None) -> Any:  # noqa: N802 (the gRPC method's name)
        _grpc_unimplemented(grpc_context, _MODEL_CONTROL)
        return service_pb2.RepositoryModelUnloadResponse()

    async def ModelInfer(self, request: Any, grpc_context: Any = None) -> Any:  # noqa: N802 (the gRPC method's name)
        if request.model_name != self.config.name:
            return await self._proxy_grpc("ModelInfer", request, grpc_context)
        headers = _grpc_headers(grpc_context)
        try:
            problem = _version_problem(request.model_name, request.model_version)
            if problem is not None:
                raise problem
            requests = oip.parse_grpc_request(
                request,
                default_k=self.config.default_k,
                max_k=self.config.max_k,
                max_batch=oip.DEFAULT_MAX_BATCH,
            )
            served = await asyncio.gather(*(self._serve(r, "grpc", headers) for r in requests))
        except InferenceError as exc:
            _grpc_abort(grpc_context, exc)
            return service_pb2.ModelInferResponse()
        responses = [response for response, _ in served]
        return oip.grpc_response(
            request.model_name, "1", responses, request, k=max(r.k for r in requests)
        )

    async def _proxy_grpc(self, method: str, request: Any, grpc_context: Any) -> Any:
        import grpc
        from tritonclient.grpc import service_pb2_grpc

        if self._grpc is None:
            channel = grpc.aio.insecure_channel(
                self.settings.triton_grpc,
                options=[("grpc.max_receive_message_length", 64 * 1024 * 1024)],
            )
            self._grpc = service_pb2_grpc.GRPCInferenceServiceStub(channel)
        try:
            return await getattr(self._grpc, method)(request, timeout=10.0)
        except grpc.aio.AioRpcError as exc:
            if grpc_context is not None:
                grpc_context.set_code(exc.code())
                grpc_context.set_details(exc.details() or "")
            response_type = getattr(service_pb2, f"{method}Response")
            return response_type()


#: The graph's one version (its models' versions are in every answer's ``model_versions``).
GRAPH_VERSION = "1"


def _version_problem(name: str, version: str | None) -> InferenceError | None:
    if version in (None, "", GRAPH_VERSION):
        return None
    return ModelNotFound(
        f"{name}: version {version!r} does not exist; the graph serves version {GRAPH_VERSION}"
    )


def _model_path(name: str, version: str | None, suffix: str) -> str:
    """Triton's path for a model, its parameters escaped: ``ranker_dcn%3F`` must stay one
    (unknown) model name, not become ``ranker_dcn`` and a query string."""
    path = f"/v2/models/{quote(name, safe='')}"
    if version:
        path += f"/versions/{quote(version, safe='')}"
    return path + suffix


def _grpc_headers(grpc_context: Any) -> dict[str, str]:
    if grpc_context is None:
        return {}
    try:
        return {k: v for k, v in grpc_context.invocation_metadata() if isinstance(v, str)}
    except Exception:  # metadata is best effort: a trace that cannot continue starts anew
        return {}


_MODEL_CONTROL = (
    "model control is not served by the graph: the operator loads models (Model resources); "
    "Triton's own endpoint serves its repository"
)


def _grpc_unimplemented(grpc_context: Any, message: str) -> None:
    import grpc

    if grpc_context is not None:
        grpc_context.set_code(grpc.StatusCode.UNIMPLEMENTED)
        grpc_context.set_details(message)


def _grpc_version_refused(grpc_context: Any, name: str, version: str) -> bool:
    problem = _version_problem(name, version)
    if problem is not None:
        _grpc_abort(grpc_context, problem)
    return problem is not None


def _grpc_abort(grpc_context: Any, exc: InferenceError) -> None:
    import grpc

    if grpc_context is not None:
        grpc_context.set_code(grpc.StatusCode[grpc_code_name(exc.status)])
        grpc_context.set_details(str(exc))


#: Made a FastAPI class-based view at import, so every process that imports this module
#: (the driver and each replica) turns the routes' ``self`` into the replica, not a query.
IngressView = serve.ingress(api)(GraphIngress)

# --------------------------------------------------------------------------------------------
# Wiring
# --------------------------------------------------------------------------------------------


def build_app(settings: GraphSettings) -> Any:
    """The application: ingress -> ranking (or the ingress alone, ranking inline)."""
    ingress = serve.deployment(
        name="ingress",
        num_replicas=settings.ingress_replicas,
        max_ongoing_requests=settings.graph.admission.max_in_flight * 2,
        ray_actor_options={"num_cpus": 0.1},
        logging_config=_QUIET,
    )(IngressView)
    if settings.ranking_placement == "inline":
        return ingress.bind(None, settings)
    ranking = serve.deployment(
        name="ranking",
        num_replicas=settings.ranking_replicas,
        max_ongoing_requests=256,
        ray_actor_options={"num_cpus": 0.1},
        logging_config=_QUIET,
    )(RankingService)
    return ingress.bind(ranking.bind(settings), settings)


def build_app_from_args(args: dict[str, Any]) -> Any:
    """The Ray Serve app builder for ``import_path`` configs (KubeRay's RayService).

    Serve hands a builder its ``args`` as a plain dict; they are the fields of
    :class:`GraphSettings`, validated here so a typo fails the deploy with the field's name.
    """
    return build_app(GraphSettings.model_validate(args))


__all__ = ["GraphIngress", "RankingService", "api", "build_app", "build_app_from_args"]
