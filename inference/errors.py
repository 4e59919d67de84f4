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
