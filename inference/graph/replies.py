"""How the graph answers a failure, over REST and gRPC: one shape, one status per kind.

Every error leaves as the Open Inference Protocol's ``{"error": message}`` with the HTTP
status its kind carries (:mod:`inference.errors`), or as the gRPC code
:func:`contract.errors.grpc_code_name` maps that status to; FastAPI's own errors (unknown
routes, validation) and unexpected exceptions are brought into the same shape here.
"""

from __future__ import annotations

import logging
from typing import Any

from fastapi import FastAPI, Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from contract.errors import grpc_code_name
from inference import metrics
from inference.errors import InferenceError, ModelNotFound
from inference.protocol import oip

log = logging.getLogger("cascade.inference")


def error(exc: InferenceError) -> JSONResponse:
    """The REST answer to a failure of a request the graph served."""
    return JSONResponse(oip.error_body(str(exc)), status_code=exc.status)


def refused(exc: InferenceError) -> JSONResponse:
    """The REST answer to a request refused before it reached the graph, counted as sent."""
    metrics.REQUESTS.labels(protocol="rest", code=str(exc.status), variant="none").inc()
    return error(exc)


def grpc_abort(grpc_context: Any, exc: InferenceError) -> None:
    """Set the gRPC status for a failure (the caller then returns an empty response)."""
    grpc_status(grpc_context, grpc_code_name(exc.status), str(exc))


def grpc_status(grpc_context: Any, code: str, details: str) -> None:
    """Set gRPC status ``code`` (a ``grpc.StatusCode`` name); no context, nothing to set."""
    import grpc

    if grpc_context is not None:
        grpc_context.set_code(grpc.StatusCode[code])
        grpc_context.set_details(details)


def grpc_headers(grpc_context: Any) -> dict[str, str]:
    """The call's metadata as headers (a trace's ``traceparent``, the warm-up mark)."""
    if grpc_context is None:
        return {}
    try:
        return {k: v for k, v in grpc_context.invocation_metadata() if isinstance(v, str)}
    except Exception:  # metadata is best effort: a trace that cannot continue starts anew
        return {}


def install(api: FastAPI) -> None:
    """Answer FastAPI's own errors and unexpected exceptions in the protocol's shape."""
    api.exception_handler(StarletteHTTPException)(_http_error)
    api.exception_handler(RequestValidationError)(_validation_error)
    api.exception_handler(Exception)(_internal_error)


async def _http_error(request: Request, exc: StarletteHTTPException) -> Response:
    """Unknown routes and methods (FastAPI answers ``{"detail": ...}``, which OIP clients
    cannot read)."""
    message = f"{request.method} {request.url.path}: {exc.detail}"
    return JSONResponse(oip.error_body(message), status_code=exc.status_code, headers=exc.headers)


async def _validation_error(request: Request, exc: RequestValidationError) -> Response:
    problems = "; ".join(
        f"{'.'.join(str(p) for p in error['loc'])}: {error['msg']}" for error in exc.errors()
    )
    return JSONResponse(oip.error_body(problems or "invalid request"), status_code=400)


async def _internal_error(request: Request, exc: Exception) -> Response:
    log.exception("unexpected failure answering %s %s", request.method, request.url.path)
    body = oip.error_body(f"internal error ({type(exc).__name__}); the server log has details")
    return JSONResponse(body, status_code=500)


#: The graph's one version (its models' versions are in every answer's ``model_versions``).
GRAPH_VERSION = "1"


def version_problem(name: str, version: str | None) -> InferenceError | None:
    """The error for asking the graph for a version it does not serve (None: no problem)."""
    if version in (None, "", GRAPH_VERSION):
        return None
    return ModelNotFound(
        f"{name}: version {version!r} does not exist; the graph serves version {GRAPH_VERSION}"
    )
