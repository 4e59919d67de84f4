"""The root error every Cascade package raises on purpose, and how a status is told to each
kind of client: an HTTP status, a gRPC code, a command's exit status, mapped here only."""

from __future__ import annotations

from typing import Final


class CascadeError(Exception):
    """Root of every error Cascade raises on purpose; ``status`` is its HTTP status."""

    status: int = 500


class RepositoryError(CascadeError):
    """The Triton model repository cannot be read or written as asked."""

    status = 500


#: HTTP status -> gRPC status code name (``grpc.StatusCode[name]``); anything else INTERNAL.
GRPC_CODES: Final[dict[int, str]] = {
    400: "INVALID_ARGUMENT",
    404: "NOT_FOUND",
    408: "DEADLINE_EXCEEDED",
    413: "RESOURCE_EXHAUSTED",
    429: "RESOURCE_EXHAUSTED",
    501: "UNIMPLEMENTED",
    503: "UNAVAILABLE",
    504: "DEADLINE_EXCEEDED",
}

#: A command that stops on a CascadeError (or bad input) exits with this status, printing one
#: line; 130 is an interrupt, as shells report one.
EXIT_ERROR: Final = 2
EXIT_INTERRUPTED: Final = 130


#: gRPC status code name -> the HTTP status it reads as, for answers from other servers
#: (Triton): the inverse of :data:`GRPC_CODES`, plus the codes that read as a bad request.
HTTP_STATUSES: Final[dict[str, int]] = {
    "INVALID_ARGUMENT": 400,
    "OUT_OF_RANGE": 400,
    "FAILED_PRECONDITION": 400,
    "ALREADY_EXISTS": 400,
    "NOT_FOUND": 404,
    # A full queue or a rate limiter: overload, which passes.
    "RESOURCE_EXHAUSTED": 429,
    "UNIMPLEMENTED": 501,
    "UNAVAILABLE": 503,
    "DEADLINE_EXCEEDED": 504,
}


def grpc_code_name(status: int) -> str:
    """The gRPC status code name for an HTTP ``status``."""
    return GRPC_CODES.get(status, "INTERNAL")


def http_status(grpc_code: str) -> int:
    """The HTTP status a gRPC status code name reads as; anything unknown is a 500."""
    return HTTP_STATUSES.get(grpc_code, 500)
