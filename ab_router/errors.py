"""The experiment package's root error and its kinds (each maps to an HTTP status)."""

from __future__ import annotations


class ExperimentError(Exception):
    """Root of every error ``ab_router`` raises on purpose."""

    status: int = 400


class UnknownExperiment(ExperimentError):
    """No experiment of that name is defined."""

    status = 404


class InvalidDesign(ExperimentError):
    """An experiment definition is inconsistent (weights, variants, layers)."""

    status = 422


class EventError(ExperimentError):
    """An event cannot be recorded as given (e.g. an outcome for a unit never exposed)."""

    status = 409


class StoreError(ExperimentError):
    """The event store failed (I/O, connection); the event was not acknowledged."""

    status = 503
