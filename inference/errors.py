"""The data plane's root error and its kinds, each carrying the HTTP status it maps to.

Callers branch on the kind (retry ``Unavailable``, degrade on ``DeadlineExceeded``, answer 4xx
for ``BadRequest``); the original exception is always kept as ``__cause__``.
"""

from __future__ import annotations

from contract.errors import CascadeError


class InferenceError(CascadeError):
    """Root of every error the data plane raises on purpose."""

    status: int = 500

    def __init__(self, message: str, *, model: str | None = None) -> None:
        self.model = model
        super().__init__(f"{model}: {message}" if model else message)


class BadRequest(InferenceError):
    """The request is malformed for the model: wrong input name, dtype, shape or batch size."""

    status = 400


class ModelNotFound(InferenceError):
    """No such model or version is loaded."""

    status = 404


class Unavailable(InferenceError):
    """The server cannot answer now (starting, overloaded, gone); worth retrying."""

    status = 503


class DeadlineExceeded(InferenceError):
    """The call did not finish within its deadline."""

    status = 504


class ServerError(InferenceError):
    """The server failed to run the model (a bug or a broken model), not the caller's fault."""

    status = 500


def kind_for_status(status: int) -> type[InferenceError]:
    """The error kind an HTTP status from another server (Triton, a proxy) reads as: what a
    caller does next (retry, degrade, answer 4xx) follows from the kind, not the number."""
    if status == 404:
        return ModelNotFound
    if status in (408, 504):
        return DeadlineExceeded
    if status in (429, 502, 503):
        return Unavailable
    if 400 <= status < 500:
        return BadRequest
    return ServerError
