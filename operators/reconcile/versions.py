"""Which model versions a graph serves: the stable ones, and the canary that splits traffic.

A pure reading of the graph's ``Model`` resources (spec and status): each model serves its
last good version (``status.servingVersion``, or the spec's before the first reconcile), and
the first model with a rollout in flight gets the canary split. A graph routes one canary at a
time; another model's rollout waits (it sees no traffic, so its progress deadline decides).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from pydantic import ValidationError

from operators.crds.specs import InferenceGraphSpec, ModelSpec
from operators.crds.status import ModelStatus, read_status
from operators.reconcile.canary import in_flight
from operators.reconcile.children import CanaryRoute


def repository_name(name: str, spec: ModelSpec) -> str:
    """The Triton name of a Model resource (resource names cannot hold underscores)."""
    return spec.repository_name or name.replace("-", "_")


@dataclass(frozen=True)
class ServingPlan:
    """Stable version per Triton model and the canary route, or why there is none."""

    problem: str | None = None
    versions: dict[str, int] = field(default_factory=dict)
    canary: CanaryRoute | None = None


def serving_plan(spec: InferenceGraphSpec, models: Mapping[str, dict[str, Any]]) -> ServingPlan:
    """``models``: the graph's Model resources by name, as the API returns them (a missing
    one absent)."""
    missing = [n for n in spec.model_names if n not in models]
    if missing:
        return ServingPlan(problem=f"Model resources not found: {', '.join(missing)}")
    versions: dict[str, int] = {}
    route: CanaryRoute | None = None
    for name in spec.model_names:
        body = models[name]
        try:
            model = ModelSpec.model_validate(body.get("spec") or {})
        except ValidationError:
            return ServingPlan(problem=f"Model {name} has an invalid spec (see its conditions)")
        status = read_status(ModelStatus, body.get("status"))
        repo = repository_name(name, model)
        versions[repo] = status.serving_version or model.version
        flight = in_flight(status)
        if flight is not None and route is None:
            route = CanaryRoute(name, repo, flight.version, flight.weight)
    return ServingPlan(versions=versions, canary=route)
