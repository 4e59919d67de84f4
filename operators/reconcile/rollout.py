"""Whether a graph's Deployments serve: the ``Available`` and ``Progressing`` conditions.

Applying the children only says what should run. A graph is ready when its pods are: the
Deployments' own status (written by the deployment controller from the kubelet's pod readiness)
says how many replicas are available and whether a rollout is under way or stuck. The graph
reports the pair of conditions a Deployment has, so ``kubectl wait --for=condition=Available``
works on it the same way.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

Status = Literal["True", "False", "Unknown"]


@dataclass(frozen=True)
class ConditionView:
    status: Status
    reason: str
    message: str


@dataclass(frozen=True)
class Rollout:
    available: ConditionView
    progressing: ConditionView

    @property
    def serving(self) -> bool:
        return self.available.status == "True"


@dataclass(frozen=True)
class _Deployment:
    role: str
    desired: int
    available: int
    updated: int
    current: bool  # the controller has seen the latest spec
    stuck: str | None  # the Deployment's ProgressDeadlineExceeded message


def _view(role: str, live: Mapping[str, Any] | None, desired: int) -> _Deployment:
    if live is None:
        return _Deployment(role, desired, 0, 0, False, None)
    status = live.get("status") or {}
    generation = (live.get("metadata") or {}).get("generation")
    observed = status.get("observedGeneration")
    stuck = next(
        (
            str(c.get("message") or "progress deadline exceeded")
            for c in status.get("conditions") or []
            if c.get("type") == "Progressing"
            and c.get("status") == "False"
            and c.get("reason") == "ProgressDeadlineExceeded"
        ),
        None,
    )
    return _Deployment(
        role=role,
        desired=int((live.get("spec") or {}).get("replicas", desired)),
        available=int(status.get("availableReplicas") or 0),
        updated=int(status.get("updatedReplicas") or 0),
        current=generation is None or observed == generation,
        stuck=stuck,
    )


def judge(live: Mapping[str, Mapping[str, Any] | None], desired: Mapping[str, int]) -> Rollout:
    """The graph's conditions from its Deployments as last read (``None``: not there yet).

    ``desired`` is what the operator asked for per role; a Deployment scaled to zero counts as
    available (nothing is owed), one with replicas owed needs at least one available pod and
    all of them once the rollout is done.
    """
    views = [_view(role, live.get(role), n) for role, n in sorted(desired.items())]
    summary = ", ".join(f"{d.role} {d.available}/{d.desired} available" for d in views)
    down = [d for d in views if d.desired > 0 and d.available == 0]
    if down:
        available = ConditionView(
            "False",
            "MinimumReplicasUnavailable",
            f"no available replica of {', '.join(d.role for d in down)} ({summary})",
        )
    else:
        available = ConditionView("True", "MinimumReplicasAvailable", summary)

    stuck = [d for d in views if d.stuck is not None]
    rolling = [
        d for d in views if not d.current or d.updated < d.desired or d.available < d.desired
    ]
    if stuck:
        progressing = ConditionView(
            "False",
            "ProgressDeadlineExceeded",
            "; ".join(f"{d.role}: {d.stuck}" for d in stuck),
        )
    elif rolling:
        progressing = ConditionView(
            "True", "RollingOut", f"rolling out {', '.join(d.role for d in rolling)} ({summary})"
        )
    else:
        progressing = ConditionView("True", "RolloutComplete", summary)
    return Rollout(available, progressing)
