"""What the operator records in each resource's ``status``.

Status is the operator's memory: a restarted operator reads the canary's step, the recent
replica recommendations and the last good version back from here, so everything a decision
needs is in these models and nothing lives only in the process.
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime
from typing import Any, Literal, TypeVar

from pydantic import BaseModel, Field, ValidationError

from operators.crds.specs import Spec

S = TypeVar("S", bound=BaseModel)


def read_status(model: type[S], raw: Any) -> S:
    """Status as last written; keys this version does not know are ignored, and an unreadable
    status (hand-edited, or from an incompatible version) starts afresh rather than wedging the
    reconcile."""
    data = dict(raw or {})
    known = {f.alias or name for name, f in model.model_fields.items()}
    try:
        return model.model_validate({k: v for k, v in data.items() if k in known})
    except ValidationError as err:
        logging.getLogger("cascade.operator").warning("unreadable status, starting afresh: %s", err)
        return model()


def timestamp(now: datetime) -> str:
    """RFC 3339 in UTC with second precision, as Kubernetes writes times."""
    return now.astimezone(UTC).replace(microsecond=0).strftime("%Y-%m-%dT%H:%M:%SZ")


def parse_timestamp(value: str) -> datetime:
    return datetime.strptime(value, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC)


class Condition(Spec):
    """The standard condition shape (``metav1.Condition``)."""

    type: str = Field(pattern=r"^[A-Za-z][A-Za-z0-9]*$", max_length=316)
    status: Literal["True", "False", "Unknown"]
    reason: str = Field(pattern=r"^[A-Za-z]([A-Za-z0-9_,:]*[A-Za-z0-9_])?$", max_length=1024)
    message: str = Field(default="", max_length=32_768)
    last_transition_time: str
    observed_generation: int | None = Field(default=None, ge=0)


def set_condition(
    conditions: list[Condition],
    type_: str,
    status: Literal["True", "False", "Unknown"],
    reason: str,
    message: str,
    *,
    generation: int | None,
    now: datetime,
) -> list[Condition]:
    """Replace the condition of ``type_``; its transition time moves only when status flips."""
    old = next((c for c in conditions if c.type == type_), None)
    since = old.last_transition_time if old and old.status == status else timestamp(now)
    new = Condition(
        type=type_,
        status=status,
        reason=reason,
        message=message,
        last_transition_time=since,
        observed_generation=generation,
    )
    return [c for c in conditions if c.type != type_] + [new]


CanaryPhase = Literal["Progressing", "Paused", "Promoted", "RolledBack", "Aborted"]


class CanaryStatus(Spec):
    """One rollout of ``version`` replacing ``from_version``."""

    version: int = Field(ge=1, description="The version under test.")
    from_version: int = Field(ge=1, description="The last good version it replaces.")
    phase: CanaryPhase
    step: int = Field(ge=0, description="Index into the policy's steps.")
    weight: int = Field(ge=0, le=100, description="Percent of traffic on the new version.")
    started_at: str
    step_started_at: str
    last_decision: str = ""
    reason: str = ""


class ModelStatus(Spec):
    serving_version: int | None = Field(
        default=None, ge=1, description="The last good version: what serves outside a canary."
    )
    canary: CanaryStatus | None = None
    history: list[str] = Field(
        default_factory=list, description="The latest rollout outcomes, newest last."
    )
    conditions: list[Condition] = Field(default_factory=list)
    observed_generation: int | None = None


class Recommendation(Spec):
    """One past replica recommendation, kept for the stabilization windows."""

    deployment: str
    replicas: int = Field(ge=0)
    at: str


class GraphStatus(Spec):
    replicas: dict[str, int] = Field(
        default_factory=dict, description="Replicas the operator set, per deployment."
    )
    recommendations: list[Recommendation] = Field(default_factory=list)
    last_scale_reason: str = ""
    model_versions: dict[str, int] = Field(
        default_factory=dict, description="Stable version per Triton model."
    )
    canary: str = Field(default="", description="The model whose canary splits traffic now.")
    endpoint: str = ""
    conditions: list[Condition] = Field(default_factory=list)
    observed_generation: int | None = None


class ExperimentStatus(Spec):
    phase: Literal["Pending", "Running", "Stopped", "Invalid"] = "Pending"
    counts: dict[str, int] = Field(default_factory=dict)
    decisions: dict[str, str] = Field(default_factory=dict)
    srm_mismatch: bool = False
    conditions: list[Condition] = Field(default_factory=list)
    observed_generation: int | None = None
